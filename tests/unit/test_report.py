"""The terminal table says when a final window refused late trades."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pipeline import report
from pipeline.core.windows import StoredWindow
from tests.reference_rows import stored_window


def row(minute: int, final: int, late: int, symbol: str = "BTCUSDT", start: datetime | None = None) -> StoredWindow:
    price = Decimal("100.5")
    return stored_window(symbol, start or datetime(2026, 1, 1, 12, minute), is_final=bool(final), late_trade_count=late,
                         trade_count=3, agg_trade_count=2, open_price=price, high_price=price, low_price=price,
                         close_price=price, average_price=price, vwap=price, volume=Decimal(2))


def test_final_open_and_final_with_late_trades_are_told_apart() -> None:
    text = report.table([row(0, 1, 0), row(1, 1, 2), row(2, 0, 0)])
    lines = text.splitlines()
    assert " yes " in lines[-3] and "yes, 2 late" in lines[-2] and " open " in lines[-1]


def at(day: int, hour: int, minute: int, symbol: str = "BTCUSDT", final: int = 1) -> StoredWindow:
    return row(0, final, 0, symbol, datetime(2026, 1, day, hour, minute))


def test_the_default_is_the_newest_stretch_and_a_range_selects_across_stretches() -> None:
    old = [at(1, 12, m) for m in range(5)]
    new = [at(3, 9, m) for m in range(3)] + [at(3, 9, 50, "ETHUSDT")]  # 47 min apart: still one stretch
    rows = old + new
    assert report.select(rows) == new
    assert report.select(rows, since=datetime(2026, 1, 1), until=datetime(2026, 1, 2)) == old
    assert report.select(rows, since=datetime(2026, 1, 1)) == rows
    assert report.select(rows, symbol="ETHUSDT") == [new[-1]]
    assert report.select(rows, minutes=2, since=datetime(2026, 1, 1)) == new[1:]  # each symbol's latest two
    assert report.select([]) == []


def test_lines_are_split_at_every_missing_minute() -> None:
    rows = [at(1, 12, m) for m in (0, 1, 2, 5, 6, 9)]
    assert [[r.start_time.minute for r in run] for run in report.segments(rows)] == [[0, 1, 2], [5, 6], [9]]


def test_the_page_has_one_interactive_panel_per_symbol_with_a_tooltip_per_candle(tmp_path: Path) -> None:
    rows = [at(1, 12, m) for m in (0, 1, 2, 5)] + [at(1, 12, m, "ETHUSDT", final=0) for m in (0, 1)]
    png, page = report.write_charts(rows, tmp_path)
    text = page.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert text.count("<svg") == 2 and text.count("<title>") == 1 + 6  # the page's, and one per candle
    assert text.count("<polyline") == 2 * 2 + 2 * 1  # BTCUSDT: two runs x (average, VWAP); ETHUSDT: one run
    assert "BTCUSDT 2026-01-01 12:05 UTC (final)" in text and "ETHUSDT 2026-01-01 12:00 UTC (open)" in text
    assert "ETHUSDT: 2 minutes, 2 open (faded)" in text and "BTCUSDT: 4 minutes, all final" in text
