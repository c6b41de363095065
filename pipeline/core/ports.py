"""The ports the core's callers are written against, owned by the inner layer: the exchange source, the trade sink
(and, below, the window store). Adapters implement them (``adapters.binance``, ``adapters.kafka_io``,
``adapters.mysql``); ``adapters.memory`` has in-memory fakes for the unit tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pipeline.core.batch import BatchCounts, BatchRead, Identity, QuarantinedMessage
from pipeline.core.coverage import Range
from pipeline.core.merging import Key, Stored
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Trade
from pipeline.core.windows import Accumulator, WindowRow

MAX_LIMIT = 1000  # records in one answer of /api/v3/aggTrades at most


@dataclasses.dataclass(frozen=True)
class Page:
    """One answer of ``/api/v3/aggTrades``: the raw records and the server's clock when it answered."""

    records: list[dict[str, Any]]
    server_time_ms: int | None
    used_weight: int | None


class ExchangeSource(Protocol):
    """Pages of aggTrades: ``BinanceClient`` (live or cassette playback), ``memory.InMemoryExchange``. Raises
    ``errors.RateLimited`` or ``errors.ExchangeUnavailable`` (``BadAnswer``) when it cannot answer."""

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time_ms: int | None = None,
                   end_time_ms: int | None = None, limit: int = MAX_LIMIT) -> Page: ...


class TradeSink(Protocol):
    """Where trades and heartbeats are published: ``kafka_io.TradeSink``, ``memory.InMemorySink``. ``flush`` waits
    until everything sent is acknowledged and returns how many were."""

    def send_trade(self, trade: Trade) -> None: ...
    def send_heartbeat(self, heartbeat: Heartbeat) -> None: ...
    def flush(self, timeout_s: float = 120.0) -> int: ...


class WindowStore(Protocol):
    """Where a batch's transaction reads and writes, one method per step (``core.unit_of_work.apply`` calls them in
    this order, all in one transaction): ``mysql.store.MysqlWindowStore`` over a cursor, ``memory.InMemoryWindowStore``.
    A final window's numbers are never rewritten; a quarantined message is known by ``QuarantinedMessage.identity``;
    a batch by its fingerprint."""

    def claim_batch(self, batch_id: int, read: BatchRead) -> bool:
        """Claim the batch's ledger slot; False: a batch with this fingerprint was applied before."""
    def load_windows(self, keys: Iterable[Key]) -> dict[Key, Stored]:
        """The stored state of these windows, locked until the transaction ends."""
    def load_coverage(self, symbols: Iterable[str]) -> dict[str, list[Range]]:
        """Each symbol's known-complete coverage (merged; [] if none), locked."""
    def add_quarantine(self, messages: Sequence[QuarantinedMessage]) -> set[Identity]:
        """Keep each message once; the identities of those not kept before."""
    def write_windows(self, rows: Sequence[tuple[WindowRow, Accumulator, Sequence[Range]]]) -> int:
        """Upsert windows with their merge state (a final one keeps its numbers); how many rows were given."""
    def add_late_ids(self, ids: Sequence[tuple[str, int, int]]) -> set[tuple[str, int]]:
        """Record (symbol, agg id, window start ms) late trades once; the (symbol, agg id) not recorded before."""
    def add_late(self, late: Iterable[tuple[str, int, int]]) -> None:
        """Add (symbol, start ms, n) late trades to the rows' ``late_trade_count``."""
    def save_coverage(self, symbol: str, ranges: Sequence[Range], before: Sequence[Range]) -> None:
        """The symbol's coverage becomes ``ranges`` (``before``: what ``load_coverage`` read)."""
    def finalize_new(self, symbol: str, spans: Sequence[tuple[int, int, int]]) -> int:
        """Mark final the open windows in ``spans`` (``coverage.newly_final``); how many turned final."""
    def record_batch(self, read: BatchRead, counts: BatchCounts) -> None:
        """The figures of the batch claimed in this transaction."""
