"""Merging a micro-batch's trades into the windows the store holds: exact, idempotent, and honest about lateness.

The job keeps no window state in Spark. Each batch reduces its trades to *islands* (per symbol and minute, runs
of consecutive agg ids with their exact accumulator) and this module merges them into the stored window::

    stored window   ids 100-180, acc A, open          batch islands  181-240 (acc B), 241-250 (acc C)
    -> merged       ids 100-250, acc merge(A, B, C)   3 outcomes: merged, duplicate, late

- an island whose ids the window already holds is a redelivery: the exact path (``merge_trades``, trade by
  trade) counts each trade once;
- a window that is *closed* (final, or inside a stretch a producer declared complete) takes no trade: the trade
  is late and counted, on the row (``late_trade_count``) and in the batch ledger, never merged silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from pipeline.core import coverage
from pipeline.core.coverage import Range
from pipeline.core.trades import Trade, invalid_reason
from pipeline.core.windows import WINDOW_MS, Accumulator, add, initialize, merge, window_start_ms


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds for one window."""

    acc: Accumulator
    id_ranges: tuple[Range, ...]
    is_final: bool
    late_trade_count: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Island:
    """A batch's valid trades of one window whose agg ids are exactly ``first_id..last_id``."""

    symbol: str
    start_ms: int
    first_id: int
    last_id: int
    acc: Accumulator


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    acc: Accumulator  # the window's accumulator after the batch (empty: the window has no trade yet)
    id_ranges: tuple[Range, ...]
    merged: int = 0  # aggTrades newly counted in the window
    duplicates: int = 0  # aggTrades the window held already
    late: int = 0  # aggTrades refused because the window was closed

    @property
    def changed(self) -> bool:
        return self.merged > 0 or self.late > 0


def merge_islands(stored: Stored | None, islands: Sequence[Island], closed: bool) -> Outcome | None:
    """The fast path: ``None`` when an island shares an id with the stored window (use ``merge_trades``)."""
    acc = stored.acc if stored else initialize()
    ranges = list(stored.id_ranges) if stored else []
    if any(coverage.overlaps(ranges, i.first_id, i.last_id) for i in islands):
        return None
    count = sum(i.acc.agg_trade_count for i in islands)
    if closed:
        return Outcome(acc, tuple(ranges), late=count)
    for island in islands:
        acc = merge(acc, island.acc)
    return Outcome(acc, tuple(coverage.union([*ranges, *((i.first_id, i.last_id) for i in islands)])),
                   merged=count)


def merge_trades(stored: Stored | None, trades: Iterable[Trade], closed: bool) -> Outcome:
    """The exact path, one trade at a time (valid trades only; a repeated agg id counts once)."""
    acc = stored.acc if stored else initialize()
    ranges = list(stored.id_ranges) if stored else []
    seen: set[int] = set()
    merged = duplicates = late = 0
    new_ids: list[int] = []
    for trade in sorted(trades, key=lambda t: t.agg_id):
        if invalid_reason(trade) is not None:
            continue
        if trade.agg_id in seen or coverage.contains(ranges, trade.agg_id):
            duplicates += 1
            continue
        seen.add(trade.agg_id)
        if closed:
            late += 1
            continue
        acc = add(acc, trade)
        new_ids.append(trade.agg_id)
        merged += 1
    return Outcome(acc, tuple(coverage.union([*ranges, *((i, i) for i in new_ids)])), merged, duplicates, late)


def is_closed(stored: Stored | None, symbol_coverage: Sequence[Range], start_ms: int, end_ms: int) -> bool:
    """A window takes no more trades once final, or once its minute lies inside known-complete coverage."""
    return (stored is not None and stored.is_final) or coverage.covers_window(symbol_coverage, start_ms, end_ms)


Key = tuple[str, int]  # (symbol, window start ms)


def settle(stored: dict[Key, Stored], symbol_coverage: dict[str, list[Range]], islands: Iterable[Island],
           trades_of: Callable[[set[Key]], dict[Key, list[Trade]]]) -> dict[Key, Outcome]:
    """Every window's outcome: ``plan``, then the exact path for the windows it names, whose trades ``trades_of``
    fetches (the Spark job collects them; rare: only windows with redelivered ids)."""
    outcomes, exact = plan(stored, symbol_coverage, islands)
    if exact:
        for key, trades in trades_of(exact).items():
            closed = is_closed(stored.get(key), symbol_coverage.get(key[0], []), key[1], key[1] + WINDOW_MS)
            outcomes[key] = merge_trades(stored.get(key), trades, closed)
    return outcomes


def plan(stored: dict[Key, Stored], symbol_coverage: dict[str, list[Range]],
         islands: Iterable[Island]) -> tuple[dict[Key, Outcome], set[Key]]:
    """Outcomes of a batch's islands per window, and the windows that need the exact path (redelivered ids)."""
    by_key: dict[Key, list[Island]] = {}
    for island in islands:
        by_key.setdefault((island.symbol, island.start_ms), []).append(island)
    outcomes: dict[Key, Outcome] = {}
    exact: set[Key] = set()
    for key, group in by_key.items():
        previous = stored.get(key)
        closed = is_closed(previous, symbol_coverage.get(key[0], []), key[1], key[1] + WINDOW_MS)
        outcome = merge_islands(previous, group, closed)
        if outcome is None:
            exact.add(key)
        else:
            outcomes[key] = outcome
    return outcomes, exact


def islands_of(trades: Iterable[Trade]) -> list[Island]:
    """A batch's valid trades as islands, as the Spark job makes them (``transforms.islands``): per (symbol,
    minute), each run of consecutive agg ids with its exact accumulator; a repeated (symbol, agg id) counts once.
    The driver's path for small batches (no Spark shuffle for a few thousand messages)."""
    by_key: dict[Key, dict[int, Trade]] = {}
    for trade in trades:
        by_key.setdefault((trade.symbol, window_start_ms(trade.event_time_ms)), {}).setdefault(trade.agg_id, trade)
    out: list[Island] = []
    for (symbol, start_ms), by_id in by_key.items():
        run: list[Trade] = []
        for agg_id in sorted(by_id):
            if run and agg_id != run[-1].agg_id + 1:
                out.append(_island(symbol, start_ms, run))
                run = []
            run.append(by_id[agg_id])
        out.append(_island(symbol, start_ms, run))
    return out


def _island(symbol: str, start_ms: int, run: list[Trade]) -> Island:
    acc = initialize()
    for trade in run:
        acc = add(acc, trade)
    return Island(symbol, start_ms, run[0].agg_id, run[-1].agg_id, acc)
