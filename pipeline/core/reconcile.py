"""Per minute, the table against the exchange's own figures (Binance 1m klines): pure comparison.

A kline carries, per symbol and minute, open, high, low, close, volume, quote asset volume (8 places) and the
number of trades: the columns of a window (its ``trade_count`` is the number of exchange trades). A minute with no
trade has a kline of zero trades and no window: both empty, a match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from pipeline.core.windows import WINDOW_MS, StoredWindow
from pipeline.errors import InputError

QUOTE_PLACES = Decimal("0.00000001")  # the kline's quote volume has 8 places; the table's has 16
COLUMNS = ("open_price", "high_price", "low_price", "close_price", "volume", "quote_volume", "trade_count")


class MalformedKline(InputError):
    """A kline that is not open time, four prices, volume, close time, quote volume and a trade count."""


@dataclasses.dataclass(frozen=True)
class Kline:
    symbol: str
    start_ms: int
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    close_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int


def parse_kline(symbol: str, raw: Sequence[Any]) -> Kline:
    try:
        start = raw[0]
        if isinstance(start, bool) or not isinstance(start, int) or start % WINDOW_MS:
            raise MalformedKline(f"{symbol} kline open time {start!r} is not a whole minute in ms")
        trades = raw[8]
        if isinstance(trades, bool) or not isinstance(trades, int) or trades < 0:
            raise MalformedKline(f"{symbol} kline at {start}: trade count {trades!r}")
        prices = [Decimal(str(raw[i])) for i in (1, 2, 3, 4, 5, 7)]
    except (IndexError, TypeError, InvalidOperation) as exc:
        raise MalformedKline(f"{symbol} kline {str(raw)[:200]!r} is malformed: {exc}") from exc
    if not all(p.is_finite() and p >= 0 for p in prices):
        raise MalformedKline(f"{symbol} kline at {start}: a price or volume is not a finite non-negative number")
    open_price, high, low, close, volume, quote = prices
    return Kline(symbol, start, open_price, high, low, close, volume, quote, trades)


@dataclasses.dataclass(frozen=True)
class Difference:
    column: str
    table: Decimal | int
    exchange: Decimal | int

    @property
    def by(self) -> Decimal | int:
        return self.table - self.exchange


@dataclasses.dataclass(frozen=True)
class Minute:
    symbol: str
    start_ms: int
    status: str  # match | mismatch | missing_in_table | missing_at_exchange | open
    differences: tuple[Difference, ...] = ()


def _value(row: StoredWindow, column: str) -> Decimal | int:
    value = getattr(row, column)
    if column == "trade_count":
        return int(value)
    value = Decimal(value)
    return value.quantize(QUOTE_PLACES) if column == "quote_volume" else value


def differences(row: StoredWindow, kline: Kline) -> tuple[Difference, ...]:
    """The columns in which a window and its kline disagree. The quote volume is compared at the kline's 8 places,
    allowing one unit in the last place (Binance does not say how it rounds)."""
    out = []
    for column in COLUMNS:
        ours, theirs = _value(row, column), getattr(kline, column)
        if column == "quote_volume":
            if abs(Decimal(ours) - theirs) > QUOTE_PLACES:
                out.append(Difference(column, ours, theirs))
        elif ours != theirs:
            out.append(Difference(column, ours, theirs))
    return tuple(out)


def compare(symbol: str, windows: Mapping[int, StoredWindow], klines: Mapping[int, Kline],
            start_ms: int, end_ms: int) -> list[Minute]:
    """Every minute in ``[start_ms, end_ms)``: the window (by start ms) against the kline. Open windows are
    reported as such, not compared; a minute neither side traded in is left out."""
    out = []
    for minute in range(start_ms - start_ms % WINDOW_MS, end_ms, WINDOW_MS):
        row, kline = windows.get(minute), klines.get(minute)
        traded = kline is not None and kline.trade_count > 0
        if row is None:
            if traded:
                out.append(Minute(symbol, minute, "missing_in_table"))
            continue
        if not row.is_final:
            out.append(Minute(symbol, minute, "open"))
        elif not traded:
            out.append(Minute(symbol, minute, "missing_at_exchange"))
        else:
            assert kline is not None
            found = differences(row, kline)
            out.append(Minute(symbol, minute, "mismatch" if found else "match", found))
    return out


def all_match(minutes: Sequence[Minute]) -> bool:
    """Everything final agrees (open minutes are not judged)."""
    return all(m.status in ("match", "open") for m in minutes)
