"""The ``WindowStore`` port over a cursor of one MySQL transaction: each step one call to ``state``, ``ledger`` or
``quarantine``. ``run`` (the checkpoint's query id) and ``query`` (the streaming query's name) go on ledger rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.adapters.mysql import ledger, quarantine, state
from pipeline.core.batch import BatchCounts, BatchRead, Identity, QuarantinedMessage
from pipeline.core.coverage import Range
from pipeline.core.merging import Key, Stored
from pipeline.core.windows import Accumulator, WindowRow


class MysqlWindowStore:
    def __init__(self, cur: Any, run: str, query: str) -> None:
        self.cur, self.run, self.query = cur, run, query
        self.loaded: set[Key] = set()  # the windows load_windows found (and locked)

    def claim_batch(self, batch_id: int, read: BatchRead) -> bool:
        return ledger.claim_batch(self.cur, self.run, self.query, batch_id, read.fingerprint, read.offsets)

    def load_windows(self, keys: Iterable[Key]) -> dict[Key, Stored]:
        found = state.load_windows(self.cur, keys)
        self.loaded.update(found)
        return found

    def load_coverage(self, symbols: Iterable[str]) -> dict[str, list[Range]]:
        return state.load_coverage(self.cur, symbols)

    def add_quarantine(self, messages: Sequence[QuarantinedMessage]) -> set[Identity]:
        return quarantine.add_quarantine(self.cur, messages)

    def write_windows(self, rows: Sequence[tuple[WindowRow, Accumulator, Sequence[Range]]]) -> int:
        return state.write_windows(self.cur, rows, self.loaded)

    def add_late_ids(self, ids: Sequence[tuple[str, int, int]]) -> set[tuple[str, int]]:
        return state.add_late_ids(self.cur, ids)

    def add_late(self, late: Iterable[tuple[str, int, int]]) -> None:
        state.add_late(self.cur, late)

    def save_coverage(self, symbol: str, ranges: Sequence[Range], before: Sequence[Range]) -> None:
        state.save_coverage(self.cur, symbol, ranges, before)

    def finalize_new(self, symbol: str, spans: Sequence[tuple[int, int, int]]) -> int:
        return state.finalize_new(self.cur, symbol, spans)

    def record_batch(self, read: BatchRead, counts: BatchCounts) -> None:
        ledger.record_batch(self.cur, self.query, read.fingerprint, counts)
