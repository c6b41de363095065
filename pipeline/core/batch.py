"""One micro-batch as the writer's transaction sees it, however it was computed (by Spark, or in the driver):
what it read (``BatchRead``), what it holds (``Gathered``: heartbeats, refused messages, islands of its trades and
the ways to fetch the trades themselves), and what applying it did (``BatchCounts``). ``gather`` computes a small
batch from its messages with the core's rules alone; ``pipeline.core.unit_of_work`` applies a ``Gathered``."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from pipeline.core import coverage, merging, messages, windows
from pipeline.core.merging import Key
from pipeline.core.trades import Trade, invalid_reason

Beat = tuple[str, int, int, int, int]  # a valid heartbeat: symbol, partition, offset, from_ms, complete_before_ms
Identity = tuple[str, int, int, str]  # a kept message: topic, partition, offset, digest of its content
Refused = tuple[int, int, str]  # a message the core refused: partition, offset, why


@dataclasses.dataclass(frozen=True)
class BatchRead:
    """What a micro-batch read: its ledger identity."""

    messages: int
    offsets: str  # "topic/partition:first-last" per partition (``adapters.mysql.ledger.offsets_text``)
    fingerprint: str  # sha256 over offsets, counts and an order-free hash of every message


@dataclasses.dataclass(frozen=True)
class BatchCounts:
    trades_merged: int = 0
    duplicates: int = 0
    late_trades: int = 0
    quarantined: int = 0
    rows_written: int = 0
    rows_finalized: int = 0

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other),
                                                    strict=True)))


@dataclasses.dataclass(frozen=True)
class QuarantinedMessage:
    """A refused or late message, kept with its reason and raw text, known by its position and content."""

    topic: str
    partition: int
    offset: int
    kafka_timestamp: datetime | None
    raw_value: str | None
    reason: str

    @property
    def digest(self) -> str:
        """What tells this message from another one at the same position (a recreated topic reuses offsets)."""
        stamp = self.kafka_timestamp.isoformat() if self.kafka_timestamp else "-"
        return hashlib.sha256(f"{stamp}\n{self.raw_value}".encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def identity(self) -> Identity:
        return self.topic, self.partition, self.offset, self.digest


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A trade that may be late: behind a heartbeat that covers it (``after``), or of a window closed before."""

    key: Key
    agg_id: int
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int | None
    raw_value: str
    after: bool


@dataclasses.dataclass
class Gathered:
    """What one batch holds, however it was computed (``writer.spark_gather`` or ``gather``)."""

    read: BatchRead
    quarantine: list[QuarantinedMessage]
    beats: list[Beat]
    islands: list[merging.Island]
    behind: list[merging.Island]  # islands of trades behind a heartbeat that covers them (late; normally none)
    exact_trades: Callable[[set[Key]], dict[Key, list[Trade]]]  # the trades (not behind) of these windows
    candidates: Callable[[set[Key]], list[Candidate]]  # the trades behind, and those of these (closed) windows


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One Kafka message as a batch read it."""

    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int | None
    value: bytes | None


def cover_pieces(beats: Iterable[Beat]) -> list[tuple[str, int, int, int, int]]:
    """A batch's heartbeats as (symbol, partition, from_ms, until_ms, offset) rows (``transforms.COVER_SCHEMA``): per
    (symbol, partition), when each window is first wholly covered (``coverage.earliest_cover``, then
    ``coverage.whole_windows``): a trade is behind a heartbeat only if that heartbeat closed its whole minute."""
    homes: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for symbol, partition, offset, start, end in beats:
        homes.setdefault((symbol, partition), []).append((offset, start, end))
    return [(symbol, partition, start, end, offset) for (symbol, partition), spans in sorted(homes.items())
            for start, end, offset in coverage.whole_windows(coverage.earliest_cover(spans), windows.WINDOW_MS)]


def gather(read: BatchRead, delivered: Sequence[Delivered],
           quarantined: Callable[[list[Refused]], list[QuarantinedMessage]]) -> Gathered:
    """A batch computed by the core's rules: ``messages.classify`` and ``trades.invalid_reason`` (the same as the
    job's Spark rules: tests/streaming/test_validation_agreement.py), lateness (``coverage.first_cover``) and islands
    (``merging.islands_of``). ``quarantined`` turns the refused messages into what the quarantine keeps (the writer
    asks Spark, for the very reason and text the Spark path keeps)."""
    beats: list[Beat] = []
    refused: list[Refused] = []
    accepted: list[tuple[Trade, Delivered]] = []
    for d in delivered:
        try:
            message = messages.classify(d.value, d.kafka_timestamp_ms)
            if d.kafka_timestamp_ms is None:
                raise messages.MalformedMessage("message without a Kafka timestamp")
        except messages.MalformedMessage as exc:
            refused.append((d.partition, d.offset, str(exc)))
            continue
        if isinstance(message, messages.Heartbeat):
            beats.append((message.symbol, d.partition, d.offset, message.covered_from_ms, message.complete_before_ms))
        elif (why := invalid_reason(message)) is not None:
            refused.append((d.partition, d.offset, why))
        else:
            accepted.append((message, d))
    homes: dict[tuple[str, int], tuple[list[coverage.Piece], list[int]]] = {}
    for symbol, partition, start, end, offset in cover_pieces(beats):
        pieces, starts = homes.setdefault((symbol, partition), ([], []))
        pieces.append((start, end, offset))
        starts.append(start)
    normal: list[tuple[Trade, Delivered]] = []
    behind: list[tuple[Trade, Delivered]] = []
    for trade, d in accepted:
        home = homes.get((trade.symbol, d.partition))
        cover = coverage.first_cover(*home, trade.event_time_ms) if home else None
        (behind if cover is not None and d.offset > cover else normal).append((trade, d))

    def key(trade: Trade) -> Key:
        return trade.symbol, windows.window_start_ms(trade.event_time_ms)

    def exact_trades(keys: set[Key]) -> dict[Key, list[Trade]]:
        out: dict[Key, list[Trade]] = {k: [] for k in keys}
        for trade, _ in normal:
            if key(trade) in keys:
                out[key(trade)].append(trade)
        return out

    def candidates(closed: set[Key]) -> list[Candidate]:
        return [Candidate(key(t), t.agg_id, d.topic, d.partition, d.offset, d.kafka_timestamp_ms,
                          bytes(d.value or b"").decode("utf-8"), after)
                for after, group in ((True, behind), (False, normal)) for t, d in group if after or key(t) in closed]

    return Gathered(read, quarantined(refused), beats, merging.islands_of(t for t, _ in normal),
                    merging.islands_of(t for t, _ in behind), exact_trades, candidates)
