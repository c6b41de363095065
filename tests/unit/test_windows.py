from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import windows
from pipeline.core.trades import Trade
from tests.unit.strategies import trades


def _t(agg_id: int, price: str, qty: str, time_ms: int, first: int = 0, last: int = 0) -> Trade:
    return Trade("BTCUSDT", agg_id, Decimal(price), Decimal(qty), first, last, time_ms, False, True)


def test_window_assignment_is_floor_to_the_utc_minute() -> None:
    assert windows.window_start_ms(1_570_752_011_620) == 1_570_752_000_000
    assert windows.window_start_ms(1_570_752_000_000) == 1_570_752_000_000
    assert windows.window_start_ms(1_570_752_059_999) == 1_570_752_000_000
    assert windows.window_start_ms(1_570_752_060_000) == 1_570_752_060_000


def test_a_worked_window() -> None:
    # Worked by hand: prices 10, 30, 20 (agg ids 7, 5, 6 arrive out of order), quantities 1, 2, 3.
    rows = windows.aggregate([
        _t(7, "10", "1", 60_500, 100, 101),
        _t(5, "30", "2", 60_100, 90, 90),
        _t(6, "20", "3", 60_200, 95, 99),
        _t(8, "0", "0", 60_300, -1, -1),  # Binance invalid record: excluded
        _t(5, "30", "2", 60_100, 90, 90),  # redelivered: counted once
    ])
    assert list(rows) == [("BTCUSDT", 60_000)]
    row = rows[("BTCUSDT", 60_000)]
    assert (row.open_price, row.close_price) == (Decimal("30"), Decimal("10"))  # lowest / highest agg id
    assert (row.high_price, row.low_price) == (Decimal("30"), Decimal("10"))
    assert row.average_price == Decimal("20.000000000000000000")
    assert row.volume == Decimal("6") and row.quote_volume == Decimal("130")  # 10 + 60 + 60
    assert row.vwap == Decimal("21.666666666666666667")  # 130 / 6, half-even at 18 places
    assert (row.trade_count, row.agg_trade_count) == (2 + 1 + 5, 3)
    assert (row.start_ms, row.end_ms) == (60_000, 120_000)


def test_the_one_rounding_rule() -> None:
    assert windows.quotient(Decimal("2"), 3) == Decimal("0.666666666666666667")
    assert windows.quotient(Decimal("0.000000000000000001"), 2) == Decimal("0.000000000000000000")  # half-even


def _fold(ts: list[Trade]) -> windows.Accumulator:
    acc = windows.initialize()
    for t in ts:
        acc = windows.add(acc, t)
    return acc


@given(st.lists(trades(symbol="BTCUSDT"), min_size=1, max_size=30, unique_by=lambda t: t.agg_id),
       st.integers(min_value=0, max_value=30))
def test_merge_of_any_split_equals_one_pass(ts: list[Trade], cut: int) -> None:
    cut = cut % (len(ts) + 1)
    assert windows.merge(_fold(ts[:cut]), _fold(ts[cut:])) == _fold(ts)
    assert windows.merge(_fold(ts[cut:]), _fold(ts[:cut])) == _fold(ts)


@given(st.lists(trades(symbol="BTCUSDT"), min_size=1, max_size=30, unique_by=lambda t: t.agg_id))
def test_window_invariants(ts: list[Trade]) -> None:
    for (_, start), row in windows.aggregate(ts).items():
        inside = [t for t in ts if windows.window_start_ms(t.event_time_ms) == start]
        assert row.low_price <= min(row.open_price, row.close_price) <= max(row.open_price, row.close_price) \
            <= row.high_price
        assert row.low_price <= row.average_price <= row.high_price
        assert row.low_price <= row.vwap <= row.high_price
        assert row.agg_trade_count == len(inside)
        assert row.trade_count == sum(t.last_trade_id - t.first_trade_id + 1 for t in inside)
        assert row.volume == sum(t.quantity for t in inside)
        assert row.open_price == min(inside, key=lambda t: t.agg_id).price
        assert row.close_price == max(inside, key=lambda t: t.agg_id).price
