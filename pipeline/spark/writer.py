"""The ``foreachBatch`` writer: one micro-batch -> one MySQL transaction (gather, decide, apply).

    gather   Spark: quarantined messages and heartbeats (few rows), islands of the trades (one row per run of
             consecutive agg ids per symbol and minute); MySQL: the stored windows and coverage they touch
    decide   ``pipeline.core.merging.plan``: merged, duplicate, late, or "exact path" per window
    apply    upsert the merged windows, count late trades on their rows, union the coverage, finalize covered
             windows, keep quarantined and late messages, write the ledger row: all in one transaction

A batch is known by the fingerprint of what it read (per partition: first and last offset, count, and a hash of
every message's offset, timestamp and value), not by Spark's batch id: a batch Spark re-executes after a crash
finds its ledger row and changes nothing, while a deleted, restored or remote checkpoint (batch ids start again) or
a recreated topic (offsets start again) cannot make a new batch look applied. Even a batch applied twice under
different cuts counts nothing twice: trades by agg id (``merging``), late trades and quarantine by Kafka position
and content.

MySQL failures that say nothing about the data (deadlock, lock wait timeout, lost or refused connection, a frozen
server cut by the client's timeouts) are retried with backoff for up to ``connection.RETRY_SECONDS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.adapters.mysql import connection, ledger, quarantine, state
from pipeline.core import coverage, merging, messages, times, windows
from pipeline.core.merging import Key
from pipeline.core.trades import Trade, invalid_reason
from pipeline.core.windows import WINDOW_MS
from pipeline.settings import MysqlUrl
from pipeline.spark import transforms

log = logging.getLogger(__name__)
QUERY = "stream"  # its ledger rows; not "windows", the stateful query of schema 1, whose batch ids differ


@dataclasses.dataclass
class JobSummary:
    batches: int = 0
    input_rows: int = 0
    counts: ledger.BatchCounts = ledger.BatchCounts()  # this run's sums of the ledger's figures
    skipped_batches: int = 0  # re-executed batches the ledger had applied already
    spark_restarts: int = 0  # queries started again after SPARK-55271
    batch_ms: list[int] = dataclasses.field(default_factory=list)
    # where batch time goes, summed over the run (seconds): read (Kafka, JSON parse, cache, fingerprint), side
    # (heartbeats and rejected messages), islands (the shuffle and aggregation), mysql (the transaction)
    phase_s: dict[str, float] = dataclasses.field(default_factory=dict)
    checkpoint_totals: ledger.BatchCounts | None = None  # the ledger's sums over every run of the checkpoint

    def add(self, counts: ledger.BatchCounts) -> None:
        self.counts = self.counts + counts

    def line(self) -> str:
        durations = sorted(self.batch_ms)
        timing = ""
        if durations:
            p50, p95 = durations[len(durations) // 2], durations[min(len(durations) - 1, len(durations) * 95 // 100)]
            timing = f"; batch time p50 {p50} ms, p95 {p95} ms, max {durations[-1]} ms"
        c = self.counts
        if self.phase_s:
            timing += "; time in batches: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.phase_s.items())
        return (f"{self.batches} batches, {self.input_rows} Kafka messages, {c.trades_merged} trades counted, "
                f"{c.duplicates} duplicates ignored, {c.late_trades} late trades, {c.rows_written} "
                f"window rows written, {c.rows_finalized} became final, {c.quarantined} quarantined, "
                f"{self.skipped_batches} re-executed batches skipped{timing}"
                + (f"; {self.spark_restarts} queries restarted after SPARK-55271" if self.spark_restarts else "")
                + (f"; since the checkpoint began: {self.checkpoint_totals.trades_merged} trades counted, "
                   f"{self.checkpoint_totals.late_trades} late, {self.checkpoint_totals.quarantined} quarantined"
                   if self.checkpoint_totals else ""))


def accumulator(row: Any) -> windows.Accumulator:
    """A Spark island row -> the reference aggregator's accumulator (so ``result`` does the rounding)."""
    return windows.Accumulator(
        agg_trade_count=int(row["agg_trade_count"]), trade_count=int(row["trade_count"]),
        price_sum=row["price_sum"], volume=row["volume"], quote_volume=row["quote_volume"],
        open_id=int(row["open_id"]), open_price=row["open_price"], close_id=int(row["close_id"]),
        close_price=row["close_price"], high_price=row["high_price"], low_price=row["low_price"],
    )


@dataclasses.dataclass(frozen=True)
class BatchRead:
    """What a micro-batch read: its ledger identity."""

    messages: int
    offsets: str  # "topic/partition:first-last" per partition
    fingerprint: str  # sha256 over offsets, counts and an order-free hash of every message


def batch_read(parsed: DataFrame) -> BatchRead:
    rows = parsed.groupBy("topic", "partition").agg(
        F.count(F.lit(1)).alias("n"), F.min("offset").alias("first"), F.max("offset").alias("last"),
        F.bit_xor("value_hash").alias("x")).collect()
    return _read_of([(r["topic"], int(r["partition"]), int(r["first"]), int(r["last"]), int(r["n"]), int(r["x"]))
                     for r in rows])


def batch_read_of_rows(rows: list[Any]) -> BatchRead:
    """``batch_read`` of collected rows (``small_batch``'s): the same fingerprint, so a batch is known as the same
    whichever path computed it."""
    parts: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        offset, part = int(r["offset"]), parts.get((r["topic"], int(r["partition"])))
        if part is None:
            parts[(r["topic"], int(r["partition"]))] = [offset, offset, 1, int(r["value_hash"])]
        else:
            part[0], part[1] = min(part[0], offset), max(part[1], offset)
            part[2] += 1
            part[3] ^= int(r["value_hash"])  # Python's ^ of signed ints is the 64-bit two's complement bit_xor
    return _read_of([(t, p, a, b, n, x) for (t, p), (a, b, n, x) in parts.items()])


def _read_of(parts: list[tuple[str, int, int, int, int, int]]) -> BatchRead:
    parts = sorted(parts)
    offsets = " ".join(f"{t}/{p}:{a}-{b}" for t, p, a, b, _, _ in parts)
    digest = hashlib.sha256("\n".join(f"{t}/{p}:{a}-{b} n={n} x={x}" for t, p, a, b, n, x in parts).encode())
    return BatchRead(sum(p[4] for p in parts), offsets, digest.hexdigest())


def _value_hash() -> Any:
    """Each message's part of the fingerprint (Spark's xxhash64 of its offset, Kafka timestamp and text)."""
    return F.xxhash64("offset", "kafka_timestamp_ms", "raw_value")


def cached_columns(classified: DataFrame) -> DataFrame:
    """What the later steps of a batch read, as cached: the raw value only where it is kept (a rejected message;
    late trades fetch theirs from Kafka, rarely), and a hash of every message for the fingerprint. Caching every raw
    value cost more than parsing it (issue 11)."""
    return (classified.withColumn("value_hash", _value_hash())
            .withColumn("raw_value", F.when(F.col("reason").isNotNull(), F.col("raw_value"))))


def collect_islands(trade_rows: DataFrame) -> tuple[list[merging.Island], list[merging.Island]]:
    """The batch's islands, and apart those of trades behind a heartbeat that covers them (``after``: late; normally
    none)."""
    normal: list[merging.Island] = []
    behind: list[merging.Island] = []
    for r in transforms.islands(trade_rows).collect():
        island = merging.Island(r["symbol"], int(r["start_ms"]), int(r["open_id"]), int(r["close_id"]),
                                accumulator(r))
        (behind if r["after"] else normal).append(island)
    return normal, behind


Beat = tuple[str, int, int, int, int]  # a valid heartbeat: symbol, partition, offset, from_ms, complete_before_ms


def cover_pieces(beats: list[Beat]) -> list[tuple[str, int, int, int, int]]:
    """The batch's heartbeats as rows of ``transforms.COVER_SCHEMA``: per (symbol, partition), when each time is
    first covered (``coverage.earliest_cover``)."""
    homes: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for symbol, partition, offset, start, end in beats:
        homes.setdefault((symbol, partition), []).append((offset, start, end))
    return [(symbol, partition, start, end, offset) for (symbol, partition), spans in sorted(homes.items())
            for start, end, offset in coverage.earliest_cover(spans)]


def cover_frame(spark: Any, beats: list[Beat]) -> DataFrame | None:
    """The batch's heartbeats as data for ``transforms.flag_behind`` (None: there are none): the plan is the same
    for 1 heartbeat or 100,000."""
    pieces = cover_pieces(beats)
    return spark.createDataFrame(pieces, transforms.COVER_SCHEMA, verifySchema=False) if pieces else None


def in_windows(rows: DataFrame, keys: set[Key]) -> DataFrame:
    """``rows`` of the windows ``keys`` (a join with them as data, not an expression listing them)."""
    wanted = rows.sparkSession.createDataFrame(sorted(keys), "symbol string, start_ms long")
    return rows.join(F.broadcast(wanted), ["symbol", "start_ms"], "left_semi")


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
    """What one batch holds, however it was computed (``spark_gather`` or ``driver_gather``)."""

    read: BatchRead
    quarantine: list[quarantine.QuarantinedMessage]
    beats: list[Beat]
    islands: list[merging.Island]
    behind: list[merging.Island]  # islands of trades behind a heartbeat that covers them (late; normally none)
    exact_trades: Callable[[set[Key]], dict[Key, list[Trade]]]  # the trades (not behind) of these windows
    candidates: Callable[[set[Key]], list[Candidate]]  # the trades behind, and those of these (closed) windows


DRIVER_VALUE_BYTES = 16_384


def small_batch(batch: DataFrame, limit: int) -> list[Any] | None:
    """The batch's messages, if it holds at most ``limit`` (PIPELINE_DRIVER_BATCH_MAX; one Spark job, no shuffle),
    to be computed in the driver by the core's functions: a Spark shuffle's fixed cost is most of a small batch's
    time (issue 18). None for a larger one (or ``limit`` 0), which goes through Spark. Both paths give the same
    fingerprint, islands and rows (tests/streaming/test_transforms_property.py)."""
    if limit <= 0:
        return None
    value = F.col("value").cast("string")
    # A message over DRIVER_VALUE_BYTES (ours are about 150 bytes) is not collected: the batch goes to Spark, so the
    # driver holds at most limit x DRIVER_VALUE_BYTES whatever the messages are.
    big = F.coalesce(F.length("value") > DRIVER_VALUE_BYTES, F.lit(False))
    rows = (batch.select("topic", "partition", "offset", F.unix_millis("timestamp").alias("kafka_timestamp_ms"),
                         value.alias("raw_value"), F.when(~big, F.col("value")).alias("value"), big.alias("big"))
            .withColumn("value_hash", _value_hash()).drop("raw_value").limit(limit + 1).collect())
    return rows if len(rows) <= limit and not any(r["big"] for r in rows) else None


def driver_gather(batch: DataFrame, rows: list[Any]) -> Gathered:
    """A small batch in the driver: the core's rules (``messages.classify``, ``trades.invalid_reason``, the same as
    the job's Spark rules: tests/streaming/test_validation_agreement.py), lateness (``coverage.first_cover``) and
    islands (``merging.islands_of``). A refused message is classified again by Spark, for the very reason and text
    the Spark path keeps (rare)."""
    read = batch_read_of_rows(rows)
    beats: list[Beat] = []
    refused: list[tuple[int, int, str]] = []
    accepted: list[tuple[Trade, Any]] = []
    for r in rows:
        raw = bytes(r["value"]) if r["value"] is not None else None
        try:
            message = messages.classify(raw, r["kafka_timestamp_ms"])
            if r["kafka_timestamp_ms"] is None:
                raise messages.MalformedMessage("message without a Kafka timestamp")
        except messages.MalformedMessage as exc:
            refused.append((int(r["partition"]), int(r["offset"]), str(exc)))
            continue
        if isinstance(message, messages.Heartbeat):
            beats.append((message.symbol, int(r["partition"]), int(r["offset"]), message.covered_from_ms,
                          message.complete_before_ms))
        elif (why := invalid_reason(message)) is not None:
            refused.append((int(r["partition"]), int(r["offset"]), why))
        else:
            accepted.append((message, r))
    homes: dict[tuple[str, int], tuple[list[coverage.Piece], list[int]]] = {}
    for symbol, partition, start, end, offset in cover_pieces(beats):
        pieces, starts = homes.setdefault((symbol, partition), ([], []))
        pieces.append((start, end, offset))
        starts.append(start)
    normal: list[tuple[Trade, Any]] = []
    behind: list[tuple[Trade, Any]] = []
    for trade, r in accepted:
        home = homes.get((trade.symbol, int(r["partition"])))
        cover = coverage.first_cover(*home, trade.event_time_ms) if home else None
        (behind if cover is not None and int(r["offset"]) > cover else normal).append((trade, r))

    def key(trade: Trade) -> Key:
        return trade.symbol, windows.window_start_ms(trade.event_time_ms)

    def exact_trades(keys: set[Key]) -> dict[Key, list[Trade]]:
        out: dict[Key, list[Trade]] = {k: [] for k in keys}
        for trade, _ in normal:
            if key(trade) in keys:
                out[key(trade)].append(trade)
        return out

    def candidates(closed: set[Key]) -> list[Candidate]:
        return [Candidate(key(t), t.agg_id, r["topic"], int(r["partition"]), int(r["offset"]), r["kafka_timestamp_ms"],
                          bytes(r["value"]).decode("utf-8"), after)
                for after, group in ((True, behind), (False, normal)) for t, r in group if after or key(t) in closed]

    return Gathered(read, spark_reasons(batch, refused), beats, merging.islands_of(t for t, _ in normal),
                    merging.islands_of(t for t, _ in behind), exact_trades, candidates)


def spark_reasons(batch: DataFrame, refused: list[tuple[int, int, str]]) -> list[quarantine.QuarantinedMessage]:
    """The messages the core refused, as the Spark job quarantines them (its reason and raw text)."""
    if not refused:
        return []
    at = batch.sparkSession.createDataFrame(sorted((p, o) for p, o, _ in refused), "partition int, offset long")
    said = {(int(r["partition"]), int(r["offset"])): r for r in transforms.classify(transforms.parse(
        batch.join(F.broadcast(at), ["partition", "offset"], "left_semi"))).select(
        "topic", "partition", "offset", "kafka_timestamp_ms", "raw_value", "reason").collect()}
    out = []
    for partition, offset, why in refused:
        r = said[(partition, offset)]
        reason = r["reason"]
        if reason is None:  # the two rule sets disagree: a bug; keep the message, say so
            log.error("partition %d offset %d: refused by the core (%s), accepted by Spark's rules; quarantined",
                      partition, offset, why)
            reason = f"refused by the core's rules only: {why}"[:1000]
        out.append(quarantine.QuarantinedMessage(r["topic"], partition, offset,
                                                  times.utc_or_none(r["kafka_timestamp_ms"]), r["raw_value"],
                                                  reason))
    return out


def spark_gather(batch: DataFrame, parsed: DataFrame, read: BatchRead) -> Gathered:
    """A batch through Spark: heartbeats and refused messages collected (few rows), the trades reduced to islands
    by one shuffle."""
    m = F.col("msg")
    side = parsed.where(F.col("reason").isNotNull() | (m["type"] == "heartbeat")).select(
        "topic", "partition", "offset", "kafka_timestamp_ms", "raw_value", "reason",
        m["s"].alias("symbol"), m["from"].alias("covered_from_ms"), m["T"].alias("complete_before_ms")).collect()
    quarantine = [quarantine.QuarantinedMessage(r["topic"], r["partition"], r["offset"],
                                                 times.utc_or_none(r["kafka_timestamp_ms"]), r["raw_value"],
                                                 r["reason"])
                  for r in side if r["reason"]]
    beats = [(r["symbol"], int(r["partition"]), int(r["offset"]), int(r["covered_from_ms"]),
              int(r["complete_before_ms"])) for r in side if not r["reason"]]
    trade_rows = transforms.trades(parsed)
    pieces = cover_frame(batch.sparkSession, beats)
    islands, behind = collect_islands(transforms.flag_behind(trade_rows, pieces))
    pieces = pieces if behind else None  # no trade is behind: later lookups need not sort by time again

    def exact_trades(keys: set[Key]) -> dict[Key, list[Trade]]:
        out: dict[Key, list[Trade]] = {k: [] for k in keys}
        rows = transforms.flag_behind(trade_rows, pieces).where(~F.col("after"))
        for r in in_windows(rows, keys).collect():
            out[(r["symbol"], int(r["start_ms"]))].append(Trade(
                r["symbol"], int(r["agg_id"]), r["price"], r["quantity"], int(r["first_trade_id"]),
                int(r["last_trade_id"]), int(r["event_ms"]), bool(r["buyer_is_maker"]), True))
        return out

    def candidates(closed: set[Key]) -> list[Candidate]:
        flagged = transforms.flag_behind(transforms.trades(parsed, "topic", "kafka_timestamp_ms"), pieces)
        wanted = flagged.where("after")
        if closed:
            wanted = wanted.unionByName(in_windows(flagged.where(~F.col("after")), closed))
        rows = wanted.collect()
        if not rows:
            return []
        at = batch.sparkSession.createDataFrame(
            sorted({(int(r["partition"]), int(r["offset"])) for r in rows}), "partition int, offset long")
        raw = {(int(r["partition"]), int(r["offset"])): r["raw_value"] for r in batch.join(
            F.broadcast(at), ["partition", "offset"], "left_semi").select(
            "partition", "offset", F.col("value").cast("string").alias("raw_value")).collect()}
        return [Candidate((r["symbol"], int(r["start_ms"])), int(r["agg_id"]), r["topic"], int(r["partition"]),
                          int(r["offset"]), r["kafka_timestamp_ms"], raw[(int(r["partition"]), int(r["offset"]))],
                          bool(r["after"])) for r in rows]

    return Gathered(read, quarantine, beats, islands, behind, exact_trades, candidates)


def late_kept(candidates: list[Candidate], stored: dict[Key, merging.Stored], outcomes: dict[Key, merging.Outcome],
              ) -> tuple[list[tuple[Key, quarantine.QuarantinedMessage]], int]:
    """The late trades themselves, to be kept where an operator (or a backfill) can find them: those of windows
    that were closed before the batch, and those behind a heartbeat that covers them in this batch. A redelivery
    of a counted trade is a duplicate, not late (those behind a heartbeat are counted here, the others by
    ``merging``)."""
    kept: list[tuple[Key, quarantine.QuarantinedMessage]] = []
    duplicates, seen = 0, set[tuple[str, int]]()
    for c in sorted(candidates, key=lambda c: (c.partition, c.offset)):
        counted = (outcomes[c.key].id_ranges if c.key in outcomes else
                   stored[c.key].id_ranges if c.key in stored else ())
        if coverage.contains(counted, c.agg_id) or (c.key[0], c.agg_id) in seen:
            duplicates += 1 if c.after else 0  # the others were counted by merging
            continue
        seen.add((c.key[0], c.agg_id))
        kept.append((c.key, quarantine.QuarantinedMessage(
            c.topic, c.partition, c.offset, times.utc_or_none(c.kafka_timestamp_ms), c.raw_value,
            f"late: window {c.key[0]} {times.utc(c.key[1]):%Y-%m-%d %H:%M} was already declared complete")))
    return kept, duplicates


class BatchWriter:
    """``run`` (the checkpoint's query id, recorded on ledger rows) may be given after the query started:
    batches wait for it."""

    def __init__(self, url: MysqlUrl, summary: JobSummary, run: str | None = None,
                 driver_batch_max: int = 0) -> None:
        self.url, self.summary, self.driver_batch_max = url, summary, driver_batch_max
        self.connection = connection.Connection(url)  # kept open between batches; the job closes it
        self._run, self._run_known = run, threading.Event()
        self.failed: str | None = None  # the batch that raised, as "batch N (K messages at offsets ...)"
        self._reading: str | None = None
        if run is not None:
            self._run_known.set()

    @property
    def run(self) -> str:
        if not self._run_known.wait(timeout=120):
            raise RuntimeError("the streaming query's id never reached the batch writer")
        assert self._run is not None
        return self._run

    @run.setter
    def run(self, value: str) -> None:
        self._run = value
        self._run_known.set()

    @property
    def ready(self) -> bool:
        return self._run_known.is_set()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self._reading = None
        parsed: DataFrame | None = None
        try:
            rows = small_batch(batch, self.driver_batch_max)
            if rows is not None:
                gathered = self._driver(batch, rows, started)
            else:
                parsed = cached_columns(transforms.classify(transforms.parse(batch))).persist()
                gathered = self._spark(batch, parsed, started)
            counts = self._apply(gathered, batch_id) if gathered.read.messages else ledger.BatchCounts()
            inputs = gathered.read.messages
        except BaseException as exc:
            self.failed = f"batch {batch_id}" + (f" ({self._reading})" if self._reading else "")
            log.error("%s failed: %s", self.failed, str(exc).strip().splitlines()[0][:500] if str(exc).strip()
                      else type(exc).__name__)
            raise
        finally:
            if parsed is not None:
                parsed.unpersist()
        self.summary.batches += 1
        self.summary.input_rows += inputs
        if counts is None:
            self.summary.skipped_batches += 1
            log.warning("batch %d was applied before (re-execution after a restart): skipped", batch_id)
            return
        self.summary.add(counts)
        if inputs:
            self.summary.batch_ms.append(int((time.monotonic() - started) * 1000))
        if counts.late_trades:
            log.warning("batch %d: %d trades arrived for windows already final; counted on their rows and kept "
                        "in quarantine", batch_id, counts.late_trades)

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.summary.phase_s[name] = self.summary.phase_s.get(name, 0.0) + now - since
        return now

    def _driver(self, batch: DataFrame, rows: list[Any], began: float) -> Gathered:
        began = self._phase("read", began)
        self._reading = f"{len(rows):,} messages, computed in the driver"
        gathered = driver_gather(batch, rows)
        self._reading = f"{gathered.read.messages:,} messages at offsets {gathered.read.offsets}, in the driver"
        self._phase("driver", began)
        return gathered

    def _spark(self, batch: DataFrame, parsed: DataFrame, began: float) -> Gathered:
        read = batch_read(parsed)
        self._reading = f"{read.messages:,} messages at offsets {read.offsets}"
        began = self._phase("read", began)
        gathered = spark_gather(batch, parsed, read)
        self._phase("islands", began)
        return gathered

    def _apply(self, g: Gathered, batch_id: int) -> ledger.BatchCounts | None:
        began, run, read, islands, beats = time.monotonic(), self.run, g.read, g.islands, g.beats
        new_coverage: dict[str, list[coverage.Range]] = {}
        for symbol, _, _, start, end in beats:
            if end > start:
                new_coverage.setdefault(symbol, []).append((start, end - 1))

        def transact(cur: Any) -> ledger.BatchCounts | None:
            if not ledger.claim_batch(cur, run, QUERY, batch_id, read.fingerprint, read.offsets):
                return None
            stored = state.load_windows(cur, {(i.symbol, i.start_ms) for i in islands})
            symbols = {i.symbol for i in islands} | {b[0] for b in beats}
            before = state.load_coverage(cur, symbols)
            outcomes = merging.settle(stored, before, islands, g.exact_trades)
            duplicates = sum(o.duplicates for o in outcomes.values())
            kept: list[tuple[Key, quarantine.QuarantinedMessage]] = []
            closed = {k for k, o in outcomes.items() if o.late}
            if closed or g.behind:  # rare: fetch the late trades themselves
                kept, more_duplicates = late_kept(g.candidates(closed), stored, outcomes)
                duplicates += more_duplicates
            new = quarantine.add_quarantine(cur, [*g.quarantine, *(msg for _, msg in kept)])
            # A late trade counts once: a batch applied again under another cut finds it kept already.
            late = Counter(key for key, msg in kept if msg.identity in new)
            duplicates += sum(1 for _, msg in kept if msg.identity not in new)
            written = state.write_windows(cur, [
                (windows.result(k[0], k[1], o.acc), o.acc, o.id_ranges) for k, o in outcomes.items() if o.merged])
            state.add_late(cur, [(k[0], k[1], n) for k, n in late.items()
                                       if k in stored or (k in outcomes and outcomes[k].merged)])
            finalized = 0
            for symbol in sorted(symbols):
                old = before.get(symbol, [])
                ranges = coverage.union([*old, *new_coverage.get(symbol, [])])
                if ranges != old:  # only what this batch's heartbeats added: bounded by the batch, not the history
                    state.save_coverage(cur, symbol, ranges, old)
                    finalized += state.finalize_new(cur, symbol, coverage.newly_final(ranges, old, WINDOW_MS))
            counts = ledger.BatchCounts(
                trades_merged=sum(o.merged for o in outcomes.values()), duplicates=duplicates,
                late_trades=sum(late.values()), quarantined=len(new), rows_written=written, rows_finalized=finalized)
            ledger.record_batch(cur, QUERY, read.fingerprint, counts)
            return counts

        counts = connection.with_retries(self.url, transact, f"batch {batch_id}", connection=self.connection)
        self._phase("mysql", began)
        return counts
