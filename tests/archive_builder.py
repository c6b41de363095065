"""Binance public-data archives written from trades, in Binance's layout (no header; ms or µs timestamps)."""

from __future__ import annotations

import random
import zipfile
from decimal import Decimal
from pathlib import Path

from pipeline.core.trades import Trade


def synthetic_trades(symbol: str, start_ms: int, count: int, seed: int, first_agg_id: int = 1,
                     spacing_ms: int = 900) -> list[Trade]:
    rng = random.Random(seed)
    trades, t, price, trade_id = [], start_ms, Decimal("100.00"), 10
    for agg_id in range(first_agg_id, first_agg_id + count):
        t += rng.randint(1, spacing_ms * 2)
        price = max(Decimal("0.01"), price + Decimal(rng.randint(-5, 5)) / 100)
        fills = rng.choice((1, 1, 1, 2, 5))
        trades.append(Trade(symbol, agg_id, price, Decimal(rng.randint(1, 10**6)) / 10**4, trade_id,
                            trade_id + fills - 1, t, rng.random() < 0.5, True))
        trade_id += fills
    return trades


def row(trade: Trade, micros: bool = False) -> str:
    stamp = trade.event_time_ms * 1000 + 123 if micros else trade.event_time_ms
    return (f"{trade.agg_id},{trade.price:.8f},{trade.quantity:.8f},{trade.first_trade_id},{trade.last_trade_id},"
            f"{stamp},{trade.buyer_is_maker},{trade.best_match}")


def write_archive(directory: Path, symbol: str, day: str, trades: list[Trade], *, micros: bool = False,
                  zipped: bool = False) -> Path:
    name = f"{symbol}-aggTrades-{day}"
    text = "".join(row(t, micros) + "\n" for t in trades)
    if zipped:
        path = directory / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{name}.csv", text)
        return path
    path = directory / f"{name}.csv"
    path.write_text(text)
    return path
