"""Binance public-data archives written from trades, in Binance's layout (no header; ms or µs timestamps), with the
``<name>.zip.CHECKSUM`` Binance publishes beside each zip, and USD-M futures look-alikes
(data.binance.vision/data/futures/um/...: a header row, 7 columns, same file names)."""

from __future__ import annotations

import hashlib
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


FUTURES_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


def futures_row(trade: Trade) -> str:
    """A USD-M futures aggTrades row: no best-match column, booleans in lower case."""
    return (f"{trade.agg_id},{trade.price:.8f},{trade.quantity:.8f},{trade.first_trade_id},{trade.last_trade_id},"
            f"{trade.event_time_ms},{str(trade.buyer_is_maker).lower()}")


def write_checksum(archive: Path, digest: str | None = None) -> Path:
    """Binance's checksum file beside ``archive``: ``<name>.CHECKSUM`` holding ``"<sha256>  <name>"`` (sha256sum's
    format); ``digest``: write that one instead of the file's own."""
    path = archive.with_name(archive.name + ".CHECKSUM")
    path.write_text(f"{digest or hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n")
    return path


def write_archive(directory: Path, symbol: str, day: str, trades: list[Trade], *, micros: bool = False,
                  zipped: bool = False, futures: bool = False, checksum: bool = False) -> Path:
    """``day``: YYYY-MM-DD, or YYYY-MM for a monthly archive. ``futures``: write what a USD-M futures archive of
    that name holds (its header, then 7-column rows). ``checksum`` (a zip only): with its matching CHECKSUM, as
    Binance publishes it, so the archive vouches for its whole period."""
    if checksum and not zipped:
        raise ValueError("Binance publishes checksums of zips only: checksum=True needs zipped=True")
    name = f"{symbol}-aggTrades-{day}"
    if futures:
        text = FUTURES_HEADER + "\n" + "".join(futures_row(t) + "\n" for t in trades)
    else:
        text = "".join(row(t, micros) + "\n" for t in trades)
    if zipped:
        path = directory / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{name}.csv", text)
        if checksum:
            write_checksum(path)
        return path
    path = directory / f"{name}.csv"
    path.write_text(text)
    return path
