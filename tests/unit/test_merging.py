"""The writer's merge logic, pure: batches of islands merged into stored windows give the reference's rows."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import coverage, merging, windows
from pipeline.core.merging import Key, Stored
from pipeline.core.trades import Trade
from tests.unit.strategies import trades


def trade(agg_id: int, time_ms: int, price: str = "10", qty: str = "1", symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, agg_id, Decimal(price), Decimal(qty), agg_id * 10, agg_id * 10 + 1, time_ms, False, True)


def apply(store: dict[Key, Stored], batch: list[Trade], symbol_coverage: dict[str, list[tuple[int, int]]]) \
        -> list[merging.Outcome]:
    """One batch through ``merging.settle`` (what the writer calls), the store's writes done on a dict."""
    def trades_of(keys: set[Key]) -> dict[Key, list[Trade]]:
        return {k: [t for t in batch if (t.symbol, windows.window_start_ms(t.event_time_ms)) == k] for k in keys}

    outcomes = merging.settle(store, symbol_coverage, merging.islands_of(batch), trades_of)
    for key, o in outcomes.items():
        if o.merged:
            previous = store.get(key)
            store[key] = Stored(o.acc, o.id_ranges, False, previous.late_trade_count if previous else 0)
    return list(outcomes.values())


def test_a_worked_example_fast_path_duplicates_and_late() -> None:
    store: dict[Key, Stored] = {}
    first = [trade(100, 60_000, "10"), trade(101, 60_500, "12"), trade(103, 61_000, "11")]  # 102: an invalid record
    apply(store, first, {})
    held = store[("BTCUSDT", 60_000)]
    assert held.id_ranges == ((100, 101), (103, 103)) and held.acc.agg_trade_count == 3

    # A redelivery of 101 beside a new trade 104: the exact path counts 104 only.
    [outcome] = apply(store, [trade(101, 60_500, "12"), trade(104, 62_000, "9")], {})
    assert (outcome.merged, outcome.duplicates, outcome.late) == (1, 1, 0)
    row = windows.result("BTCUSDT", 60_000, store[("BTCUSDT", 60_000)].acc)
    assert (row.open_price, row.close_price, row.high_price, row.low_price) == (10, 9, 12, 9)
    assert row.average_price == Decimal("10.5") and row.agg_trade_count == 4

    # Once the minute is covered, a new trade is late and changes nothing.
    before = store[("BTCUSDT", 60_000)]
    [late] = apply(store, [trade(105, 63_000, "1000")], {"BTCUSDT": [(0, 119_999)]})
    assert (late.merged, late.late) == (0, 1)
    assert store[("BTCUSDT", 60_000)] == before
    # The same on the exact path (a redelivery beside the late trade): one duplicate, one late, nothing merged.
    [mixed] = apply(store, [trade(101, 60_500, "12"), trade(106, 64_000, "1000")], {"BTCUSDT": [(0, 119_999)]})
    assert (mixed.merged, mixed.duplicates, mixed.late) == (0, 1, 1)
    assert store[("BTCUSDT", 60_000)] == before


def test_a_window_not_yet_covered_stays_open_to_trades() -> None:
    store: dict[Key, Stored] = {}
    # Coverage ends inside the minute [60 000, 120 000): it is not closed, a trade in it is merged.
    [outcome] = apply(store, [trade(1, 90_000)], {"BTCUSDT": [(0, 119_998)]})
    assert outcome.merged == 1 and outcome.late == 0


@st.composite
def trade_stream(draw: st.DrawFn) -> list[Trade]:
    """Trades of two symbols like Binance's: ids consecutive per symbol, times non-decreasing with the id."""
    out = []
    for symbol in ("BTCUSDT", "ADAUSDT"):
        t, agg_id = 1_700_000_000_000, draw(st.integers(0, 10**6))
        for _ in range(draw(st.integers(1, 60))):
            t += draw(st.integers(0, 40_000))
            agg_id += draw(st.sampled_from([1, 1, 1, 2]))  # now and then an id that never arrives
            price = Decimal(draw(st.integers(1, 10**6))).scaleb(-2)
            out.append(Trade(symbol, agg_id, price, Decimal(draw(st.integers(1, 999))).scaleb(-3), agg_id,
                             agg_id + draw(st.integers(0, 3)), t, False, True))
    return out


@settings(max_examples=200)
@given(trades=trade_stream(), data=st.data())
def test_any_batching_with_redeliveries_gives_the_reference_rows(trades: list[Trade], data: st.DataObject) -> None:
    deliveries = list(trades)
    for i in data.draw(st.lists(st.integers(0, len(trades) - 1), max_size=20)):
        deliveries.insert(data.draw(st.integers(0, len(deliveries))), trades[i])  # redelivered, anywhere
    cuts = sorted(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=8)))
    store: dict[Key, Stored] = {}
    merged = duplicates = 0
    for lo, hi in zip([0, *cuts], [*cuts, len(deliveries)], strict=True):
        for outcome in apply(store, deliveries[lo:hi], {}):
            merged, duplicates = merged + outcome.merged, duplicates + outcome.duplicates
    got = {k: windows.result(k[0], k[1], s.acc) for k, s in store.items()}
    assert got == windows.aggregate(trades)
    assert merged == len(trades)


def test_stored_ranges_survive_their_text_form() -> None:
    ranges = coverage.union([(5, 9), (1, 3), (4, 4), (20, 20)])
    assert ranges == [(1, 9), (20, 20)]
    assert coverage.parse(coverage.render(ranges)) == ranges
    assert coverage.covers_window([(60_000, 119_999)], 60_000, 120_000)
    assert not coverage.covers_window([(60_000, 119_998)], 60_000, 120_000)
    assert dataclasses.replace(Stored(windows.initialize(), (), False)).is_final is False


@given(st.lists(trades(), max_size=40), st.lists(st.integers(0, 1000), max_size=8))
def test_the_cores_islands_are_runs_of_consecutive_ids_that_sum_to_the_reference(batch: list[Trade],
                                                                                  repeats: list[int]) -> None:
    """``islands_of`` (the driver's path for small batches) against the reference aggregator; a redelivered trade
    (same symbol and agg id) counts once."""
    # One content per (symbol, agg id), as on the exchange: what two different copies of an id should give is
    # another question, not this test's.
    unique = list({(t.symbol, t.agg_id): t for t in batch}.values())
    with_repeats = unique + [unique[i % len(unique)] for i in repeats] if unique else []
    by_key: dict[Key, windows.Accumulator] = {}
    runs: dict[Key, list[tuple[int, int]]] = {}
    for island in merging.islands_of(with_repeats):
        key = (island.symbol, island.start_ms)
        assert island.acc.agg_trade_count == island.last_id - island.first_id + 1
        by_key[key] = windows.merge(by_key.get(key, windows.initialize()), island.acc)
        runs.setdefault(key, []).append((island.first_id, island.last_id))
    for ranges in runs.values():  # disjoint and not adjacent: each run is maximal
        ordered = sorted(ranges)
        assert all(a[1] + 1 < b[0] for a, b in zip(ordered, ordered[1:], strict=False)), ordered
    expected = windows.aggregate(unique)
    assert {k: windows.result(k[0], k[1], acc) for k, acc in by_key.items()} == expected
