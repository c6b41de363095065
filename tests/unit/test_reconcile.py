"""The pure comparison of windows with klines: statuses, the columns that differ and by how much, and what a
malformed kline is."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.core import reconcile
from pipeline.core.windows import StoredWindow
from tests.reference_rows import stored_window

M = 1_767_268_800_000  # 2026-01-01 12:00 UTC


def kline(start: int, trades: int = 3, close: str = "101.5", quote: str = "304.50000000") -> list[object]:
    return [start, "100.0", "102.0", "99.5", close, "3.00000000", start + 59_999, quote, trades, "0", "0", "0"]


def row(final: bool = True, close: str = "101.5", quote: str = "304.5000000000000000", trades: int = 3
        ) -> StoredWindow:
    return stored_window(is_final=final, open_price=Decimal("100.0"), high_price=Decimal("102.0"),
                         low_price=Decimal("99.5"), close_price=Decimal(close), volume=Decimal("3"),
                         quote_volume=Decimal(quote), trade_count=trades)


def parsed(*raws: list[object]) -> dict[int, reconcile.Kline]:
    return {k.start_ms: k for k in (reconcile.parse_kline("BTCUSDT", r) for r in raws)}


def test_every_status_and_the_differing_columns() -> None:
    klines = parsed(kline(M), kline(M + 60_000, close="101.6"), kline(M + 120_000), kline(M + 180_000, trades=0),
                    kline(M + 240_000, trades=0), kline(M + 300_000))
    windows = {M: row(), M + 60_000: row(), M + 180_000: row(), M + 300_000: row(final=False)}
    minutes = reconcile.compare("BTCUSDT", windows, klines, M, M + 360_000)
    assert [(m.start_ms - M) // 60_000 for m in minutes] == [0, 1, 2, 3, 5]  # minute 4: nobody traded
    assert [m.status for m in minutes] == ["match", "mismatch", "missing_in_table", "missing_at_exchange", "open"]
    [difference] = minutes[1].differences
    assert (difference.column, difference.table, difference.exchange, difference.by) == \
        ("close_price", Decimal("101.5"), Decimal("101.6"), Decimal("-0.1"))
    assert not reconcile.all_match(minutes)
    assert reconcile.all_match([minutes[0], minutes[4]])  # open minutes are not judged


@pytest.mark.parametrize(("ours", "verdict"), [("304.5000000049999999", True), ("304.5000000100000000", True),
                                               ("304.5000000100000001", True), ("304.5000000150000000", False),
                                               ("304.4999999849999999", False)])
def test_the_quote_volume_is_compared_at_the_klines_eight_places(ours: str, verdict: bool) -> None:
    """The table's 16 places rounded to the kline's 8, then one unit in the last place of slack."""
    assert (not reconcile.differences(row(quote=ours), parsed(kline(M))[M])) is verdict


@pytest.mark.parametrize("raw", [[M + 1, *kline(M)[1:]], kline(M)[:8], [M, "x", *kline(M)[2:]],
                                 [M, *kline(M)[1:8], -1], [M, *kline(M)[1:8], True], [M, "-1", *kline(M)[2:]],
                                 [M, "NaN", *kline(M)[2:]], "not a list"])
def test_malformed_klines_are_refused(raw: object) -> None:
    with pytest.raises(reconcile.MalformedKline):
        reconcile.parse_kline("BTCUSDT", raw)  # type: ignore[arg-type]
