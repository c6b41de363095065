"""The reference aggregator: what a window's numbers *are*. The Spark job must produce exactly these.

Windows are UTC minutes, assigned by integer arithmetic on epoch milliseconds::

    event_time_ms:   ... 59_999 | 60_000 ... 119_999 | 120_000 ...
    window:          [0, 60_000)| [60_000, 120_000)  | [120_000, 180_000)

The aggregator is initialize / add / merge / result over plain values. Sums are exact (``Decimal`` with enough
precision that no addition or product rounds); only the two quotients, ``average_price`` and ``vwap``, are rounded:
to ``RESULT_SCALE`` decimal places, half-even.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from pipeline.core.times import utc
from pipeline.core.trades import Trade, invalid_reason

WINDOW_MS = 60_000
RESULT_SCALE = 18  # DECIMAL(38, 18) in MySQL: prices below 10^10 keep 18 places
_QUANTUM = Decimal(1).scaleb(-RESULT_SCALE)
_EXACT = Context(prec=80)  # wide enough that sums of DECIMAL(18,8) values and their products never round


def window_start_ms(event_time_ms: int) -> int:
    return event_time_ms - event_time_ms % WINDOW_MS


@dataclasses.dataclass(frozen=True, slots=True)
class Accumulator:
    """Everything needed to produce a window's row; ``merge`` is associative and commutative."""

    agg_trade_count: int = 0
    trade_count: int = 0
    price_sum: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    open_id: int | None = None
    open_price: Decimal | None = None
    close_id: int | None = None
    close_price: Decimal | None = None
    high_price: Decimal | None = None
    low_price: Decimal | None = None


def initialize() -> Accumulator:
    return Accumulator()


def add(acc: Accumulator, trade: Trade) -> Accumulator:
    single = Accumulator(
        agg_trade_count=1,
        trade_count=trade.trade_count,
        price_sum=trade.price,
        volume=trade.quantity,
        quote_volume=_EXACT.multiply(trade.price, trade.quantity),
        open_id=trade.agg_id,
        open_price=trade.price,
        close_id=trade.agg_id,
        close_price=trade.price,
        high_price=trade.price,
        low_price=trade.price,
    )
    return merge(acc, single)


def _pick(a: Decimal | None, b: Decimal | None, higher: bool) -> Decimal | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b) if higher else min(a, b)


def merge(a: Accumulator, b: Accumulator) -> Accumulator:
    if a.agg_trade_count == 0:
        return b
    if b.agg_trade_count == 0:
        return a
    assert a.open_id is not None and b.open_id is not None and a.close_id is not None and b.close_id is not None
    first, last = (a if a.open_id <= b.open_id else b), (a if a.close_id >= b.close_id else b)
    return Accumulator(
        agg_trade_count=a.agg_trade_count + b.agg_trade_count,
        trade_count=a.trade_count + b.trade_count,
        price_sum=_EXACT.add(a.price_sum, b.price_sum),
        volume=_EXACT.add(a.volume, b.volume),
        quote_volume=_EXACT.add(a.quote_volume, b.quote_volume),
        open_id=first.open_id,
        open_price=first.open_price,
        close_id=last.close_id,
        close_price=last.close_price,
        high_price=_pick(a.high_price, b.high_price, higher=True),
        low_price=_pick(a.low_price, b.low_price, higher=False),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class WindowRow:
    """One row of ``moving_averages`` (without ``is_final`` / ``updated_at``, which the writer owns)."""

    symbol: str
    start_ms: int
    end_ms: int
    average_price: Decimal
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    close_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    vwap: Decimal
    trade_count: int
    agg_trade_count: int


@dataclasses.dataclass(frozen=True)
class StoredWindow(WindowRow):
    """A row of ``moving_averages`` as read back: the numbers and what the writer owns."""

    is_final: bool
    late_trade_count: int
    updated_at: datetime  # naive UTC

    @property
    def start_time(self) -> datetime:
        """The window's start as the table holds it (naive UTC)."""
        return utc(self.start_ms)

    @property
    def end_time(self) -> datetime:
        return utc(self.end_ms)


def quotient(numerator: Decimal, denominator: Decimal | int) -> Decimal:
    """The one rounding rule: exact division, then RESULT_SCALE places half-even."""
    return _EXACT.divide(numerator, Decimal(denominator)).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_EXACT)


def result(symbol: str, start_ms: int, acc: Accumulator) -> WindowRow:
    if acc.agg_trade_count == 0:
        raise ValueError("an empty window has no row")
    assert acc.open_price is not None and acc.close_price is not None
    assert acc.high_price is not None and acc.low_price is not None
    return WindowRow(
        symbol=symbol,
        start_ms=start_ms,
        end_ms=start_ms + WINDOW_MS,
        average_price=quotient(acc.price_sum, acc.agg_trade_count),
        open_price=acc.open_price,
        high_price=acc.high_price,
        low_price=acc.low_price,
        close_price=acc.close_price,
        volume=acc.volume,
        quote_volume=acc.quote_volume,
        vwap=quotient(acc.quote_volume, acc.volume) if acc.volume else Decimal(0),
        trade_count=acc.trade_count,
        agg_trade_count=acc.agg_trade_count,
    )


def aggregate(trades: Iterable[Trade]) -> dict[tuple[str, int], WindowRow]:
    """Reference batch aggregation: valid trades, each (symbol, agg id) counted once, by (symbol, window start)."""
    accs: dict[tuple[str, int], Accumulator] = {}
    seen: set[tuple[str, int]] = set()
    for trade in trades:
        if invalid_reason(trade) is not None or (trade.symbol, trade.agg_id) in seen:
            continue
        seen.add((trade.symbol, trade.agg_id))
        key = (trade.symbol, window_start_ms(trade.event_time_ms))
        accs[key] = add(accs.get(key, initialize()), trade)
    return {key: result(key[0], key[1], acc) for key, acc in sorted(accs.items())}
