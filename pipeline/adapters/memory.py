"""In-memory implementations of the ports, for tests and for trying the logic without services."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.core import coverage
from pipeline.core.batch import BatchCounts, BatchRead, Identity, QuarantinedMessage
from pipeline.core.coverage import Range
from pipeline.core.merging import Key, Stored
from pipeline.core.messages import Heartbeat
from pipeline.core.ports import MAX_LIMIT, Page
from pipeline.core.trades import Trade
from pipeline.core.windows import Accumulator, WindowRow


class InMemorySink:
    """Keeps what was sent; ``flush`` moves it to ``acknowledged`` (or raises ``fail_with`` once, if set)."""

    def __init__(self) -> None:
        self.pending: list[Trade | Heartbeat] = []
        self.acknowledged: list[Trade | Heartbeat] = []
        self.fail_with: Exception | None = None

    def send_trade(self, trade: Trade) -> None:
        self.pending.append(trade)

    def send_heartbeat(self, heartbeat: Heartbeat) -> None:
        self.pending.append(heartbeat)

    def flush(self, timeout_s: float = 120.0) -> int:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            self.pending.clear()
            raise exc
        done, self.pending = self.pending, []
        self.acknowledged.extend(done)
        return len(done)

    @property
    def trades(self) -> list[Trade]:
        return [t for t in self.acknowledged if isinstance(t, Trade)]


class InMemoryExchange:
    """An ``ExchangeSource`` over in-memory aggTrade records with Binance's paging rules, on a given clock.

    ``faults`` are raised, in order, by the next calls (a 429 as ``RateLimited``, an HTML page as ``BadAnswer``...);
    ``calls`` records (clock seconds, symbol, arguments) of every call.
    """

    def __init__(self, records: dict[str, list[dict[str, Any]]], clock: Callable[[], float],
                 faults: list[Exception] | None = None) -> None:
        self.records, self.clock, self.faults = records, clock, list(faults or [])
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time_ms: int | None = None,
                   end_time_ms: int | None = None, limit: int = MAX_LIMIT) -> Page:
        self.calls.append((self.clock(), symbol, {"from_id": from_id, "start_time_ms": start_time_ms,
                                                  "end_time_ms": end_time_ms, "limit": limit}))
        if self.faults:
            raise self.faults.pop(0)
        now_ms = int(self.clock() * 1000)
        visible = [r for r in self.records[symbol] if r["T"] <= now_ms]
        if from_id is not None:
            page = [r for r in visible if r["a"] >= from_id][:limit]
        elif start_time_ms is not None:  # a time range answers its *last* `limit` trades, as Binance does
            end = end_time_ms if end_time_ms is not None else start_time_ms + 3_600_000
            page = [r for r in visible if start_time_ms <= r["T"] <= end][-limit:]
        else:
            page = visible[-limit:]
        return Page(records=page, server_time_ms=now_ms, used_weight=None)


@dataclasses.dataclass
class HeldWindow:
    """A row of ``moving_averages`` as ``InMemoryWindowStore`` keeps it."""

    row: WindowRow
    acc: Accumulator
    id_ranges: tuple[Range, ...]
    is_final: bool = False
    late_trade_count: int = 0


class InMemoryWindowStore:
    """A ``WindowStore`` in dicts, with the MySQL adapter's semantics: a final row's numbers are never rewritten (only
    ``late_trade_count`` grows), late counts land only on rows that exist, a coverage range is keyed by its start, a
    quarantined message is known by (topic, partition, offset, digest), a batch by its fingerprint. No rollback: a
    step that raises leaves the steps before it done (MySQL would undo them)."""

    def __init__(self) -> None:
        self.windows: dict[Key, HeldWindow] = {}
        self.coverage: dict[str, dict[int, int]] = {}  # symbol -> first ms -> last ms
        self.quarantine: dict[Identity, QuarantinedMessage] = {}
        self.late_ids: dict[tuple[str, int], int] = {}  # (symbol, agg id) -> window start ms
        self.ledger: dict[str, tuple[int, str, BatchCounts | None]] = {}  # fingerprint -> batch id, offsets, figures

    def claim_batch(self, batch_id: int, read: BatchRead) -> bool:
        if read.fingerprint in self.ledger:
            return False
        self.ledger[read.fingerprint] = (batch_id, read.offsets, None)
        return True

    def load_windows(self, keys: Iterable[Key]) -> dict[Key, Stored]:
        return {k: Stored(w.acc, w.id_ranges, w.is_final, w.late_trade_count)
                for k in sorted(set(keys)) if (w := self.windows.get(k)) is not None}

    def load_coverage(self, symbols: Iterable[str]) -> dict[str, list[Range]]:
        return {s: coverage.union(self.coverage.get(s, {}).items()) for s in sorted(set(symbols))}

    def add_quarantine(self, messages: Sequence[QuarantinedMessage]) -> set[Identity]:
        new = {m.identity: m for m in messages if m.identity not in self.quarantine}
        self.quarantine.update(new)
        return set(new)

    def write_windows(self, rows: Sequence[tuple[WindowRow, Accumulator, Sequence[Range]]]) -> int:
        for row, acc, ranges in rows:
            held = self.windows.get((row.symbol, row.start_ms))
            if held is None:
                self.windows[(row.symbol, row.start_ms)] = HeldWindow(row, acc, tuple(ranges))
            elif not held.is_final:
                held.row, held.acc, held.id_ranges = row, acc, tuple(ranges)
        return len(rows)

    def add_late_ids(self, ids: Sequence[tuple[str, int, int]]) -> set[tuple[str, int]]:
        fresh = {(symbol, agg_id) for symbol, agg_id, _ in ids} - set(self.late_ids)
        self.late_ids.update({(symbol, agg_id): start for symbol, agg_id, start in ids if (symbol, agg_id) in fresh})
        return fresh

    def add_late(self, late: Iterable[tuple[str, int, int]]) -> None:
        for symbol, start_ms, n in late:
            if (held := self.windows.get((symbol, start_ms))) is not None:
                held.late_trade_count += n

    def save_coverage(self, symbol: str, ranges: Sequence[Range], before: Sequence[Range]) -> None:
        held = self.coverage.setdefault(symbol, {})
        for first, last in sorted(set(before) - set(ranges)):
            if held.get(first) == last:
                del held[first]
        for first, last in sorted(set(ranges) - set(before)):
            if first in held:
                raise KeyError(f"coverage of {symbol} from {first} is stored already (a duplicate key in MySQL)")
            held[first] = last

    def finalize_new(self, symbol: str, spans: Sequence[tuple[int, int, int]]) -> int:
        finalized = 0
        for first_start, last_start, end_limit in spans:
            for (s, start_ms), held in self.windows.items():
                if (s == symbol and not held.is_final and first_start <= start_ms <= last_start
                        and held.row.end_ms <= end_limit):
                    held.is_final = True
                    finalized += 1
        return finalized

    def record_batch(self, read: BatchRead, counts: BatchCounts) -> None:
        batch_id, offsets, _ = self.ledger[read.fingerprint]
        self.ledger[read.fingerprint] = (batch_id, offsets, counts)

    def rows(self) -> dict[Key, WindowRow]:
        return {k: w.row for k, w in sorted(self.windows.items())}

    def final(self) -> set[Key]:
        return {k for k, w in self.windows.items() if w.is_final}
