"""Comparing the rows in MySQL with the reference aggregator's, column by column."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pipeline.adapters.mysql import reads
from pipeline.core import times, windows
from pipeline.core.trades import Trade
from pipeline.core.windows import StoredWindow
from pipeline.settings import MysqlUrl


def expected_rows(trades: Iterable[Trade]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The reference aggregator's rows, keyed and shaped like ``reads.read_windows``."""
    out = {}
    for row in windows.aggregate(trades).values():
        out[(row.symbol, times.utc(row.start_ms))] = {
            "symbol": row.symbol, "start_time": times.utc(row.start_ms), "end_time": times.utc(row.end_ms),
            "average_price": row.average_price, "open_price": row.open_price, "high_price": row.high_price,
            "low_price": row.low_price, "close_price": row.close_price, "volume": row.volume,
            "quote_volume": row.quote_volume, "vwap": row.vwap, "trade_count": row.trade_count,
            "agg_trade_count": row.agg_trade_count,
        }
    return out


def actual_rows(url: MysqlUrl) -> dict[tuple[str, Any], StoredWindow]:
    return {(r.symbol, r.start_time): r for r in reads.read_windows(url)}


def assert_rows_match(url: MysqlUrl, trades: Iterable[Trade], *, all_final: bool = True) -> None:
    expected, actual = expected_rows(trades), actual_rows(url)
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))[:5]}, unexpected {sorted(set(actual) - set(expected))[:5]}")
    mismatches = []
    for key, want in expected.items():
        got = actual[key]
        for column, value in want.items():
            if getattr(got, column) != value:
                mismatches.append(f"{key} {column}: MySQL {getattr(got, column)!r} != reference {value!r}")
    assert not mismatches, "\n".join(mismatches[:20])
    if all_final:
        assert all(r.is_final == 1 for r in actual.values()), "every closed window should be final"


def stored_window(symbol: str = "BTCUSDT", start: datetime = datetime(2026, 1, 1, 12), *, is_final: bool = True,
                  late_trade_count: int = 0, **columns: object) -> StoredWindow:
    """A row as ``reads.read_windows`` returns it, for tests of what shows rows: every number 1 unless given."""
    numbers: dict[str, object] = {name: Decimal(1) for name in (
        "average_price", "open_price", "high_price", "low_price", "close_price", "volume", "quote_volume", "vwap")}
    numbers.update(trade_count=1, agg_trade_count=1)
    numbers.update(columns)
    start_ms = times.ms(start)
    return StoredWindow(symbol, start_ms, start_ms + 60_000, is_final=is_final, late_trade_count=late_trade_count,
                        updated_at=start, **numbers)  # type: ignore[arg-type]
