"""The terminal table says when a final window refused late trades."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pipeline import report


def row(minute: int, final: int, late: int) -> dict[str, object]:
    price = Decimal("100.5")
    return {"symbol": "BTCUSDT", "start_time": datetime(2026, 1, 1, 12, minute), "is_final": final,
            "late_trade_count": late, "trade_count": 3, "open_price": price, "high_price": price, "low_price": price,
            "close_price": price, "average_price": price, "vwap": price, "volume": Decimal(2)}


def test_final_open_and_final_with_late_trades_are_told_apart() -> None:
    text = report.table([row(0, 1, 0), row(1, 1, 2), row(2, 0, 0)])
    lines = text.splitlines()
    assert " yes " in lines[-3] and "yes, 2 late" in lines[-2] and " open " in lines[-1]
