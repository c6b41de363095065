"""The ``foreachBatch`` writer: one micro-batch -> one MySQL transaction (gather, then apply).

    gather   Spark: quarantined messages and heartbeats (few rows), islands of the trades (one row per run of
             consecutive agg ids per symbol and minute); a small batch in the driver by the core
             (``pipeline.core.batch.gather``): either way one ``Gathered``
    apply    ``pipeline.core.unit_of_work.apply`` on ``adapters.mysql.store.MysqlWindowStore``, in one transaction:
             load the stored windows and coverage, settle (``merging``: merged, duplicate, late, or the exact
             path), keep quarantined and late messages, upsert the merged windows, count late trades on their
             rows, union the coverage, finalize covered windows, write the ledger row

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
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.adapters.mysql import connection, ledger
from pipeline.adapters.mysql.store import MysqlWindowStore
from pipeline.core import merging, times, unit_of_work, windows
from pipeline.core.batch import (
    BatchCounts,
    BatchRead,
    Beat,
    Candidate,
    Delivered,
    Gathered,
    QuarantinedMessage,
    Refused,
    cover_pieces,
    gather,
)
from pipeline.core.merging import Key
from pipeline.core.trades import Trade
from pipeline.settings import MysqlUrl
from pipeline.spark import transforms

log = logging.getLogger(__name__)
QUERY = "stream"  # its ledger rows; not "windows", the stateful query of schema 1, whose batch ids differ


@dataclasses.dataclass
class JobSummary:
    batches: int = 0
    input_rows: int = 0
    counts: BatchCounts = BatchCounts()  # this run's sums of the ledger's figures
    skipped_batches: int = 0  # re-executed batches the ledger had applied already
    spark_restarts: int = 0  # queries started again after SPARK-55271
    batch_ms: list[int] = dataclasses.field(default_factory=list)
    # where batch time goes, summed over the run (seconds): read (Kafka, JSON parse, cache, fingerprint), side
    # (heartbeats and rejected messages), islands (the shuffle and aggregation), mysql (the transaction)
    phase_s: dict[str, float] = dataclasses.field(default_factory=dict)
    checkpoint_totals: BatchCounts | None = None  # the ledger's sums over every run of the checkpoint

    def add(self, counts: BatchCounts) -> None:
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
    offsets = ledger.offsets_text((t, p, a, b) for t, p, a, b, _, _ in parts)
    digest = hashlib.sha256("\n".join(f"{t}/{p}:{a}-{b} n={n} x={x}" for t, p, a, b, n, x in parts).encode())
    return BatchRead(sum(p[4] for p in parts), offsets, digest.hexdigest())


def _value_hash() -> Any:
    """Each message's part of the fingerprint (Spark's xxhash64 of its offset, Kafka timestamp and text)."""
    return F.xxhash64("offset", "kafka_timestamp_ms", "raw_value")


def cached_columns(classified: DataFrame) -> DataFrame:
    """What the later steps of a batch read, as cached: the raw value only where it is kept (a rejected message;
    late trades fetch theirs from Kafka, rarely), and a hash of every message for the fingerprint. Caching every raw
    value cost more than parsing it."""
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


def cover_frame(spark: Any, beats: list[Beat]) -> DataFrame | None:
    """The batch's heartbeats as data for ``transforms.flag_behind`` (None: there are none): the plan is the same
    for 1 heartbeat or 100,000."""
    pieces = cover_pieces(beats)
    return spark.createDataFrame(pieces, transforms.COVER_SCHEMA, verifySchema=False) if pieces else None


def in_windows(rows: DataFrame, keys: set[Key]) -> DataFrame:
    """``rows`` of the windows ``keys`` (a join with them as data, not an expression listing them)."""
    wanted = rows.sparkSession.createDataFrame(sorted(keys), "symbol string, start_ms long")
    return rows.join(F.broadcast(wanted), ["symbol", "start_ms"], "left_semi")


DRIVER_VALUE_BYTES = 16_384


def small_batch(batch: DataFrame, limit: int) -> list[Any] | None:
    """The batch's messages, if it holds at most ``limit`` (PIPELINE_DRIVER_BATCH_MAX; one Spark job, no shuffle),
    to be computed in the driver by the core's functions: a Spark shuffle's fixed cost is most of a small batch's
    time. None for a larger one (or ``limit`` 0), which goes through Spark. Both paths give the same
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
    """A small batch in the driver, by the core's rules (``batch.gather``). A refused message is classified again by
    Spark, for the very reason and text the Spark path keeps (rare)."""
    delivered = [Delivered(r["topic"], int(r["partition"]), int(r["offset"]), r["kafka_timestamp_ms"],
                           bytes(r["value"]) if r["value"] is not None else None) for r in rows]
    return gather(batch_read_of_rows(rows), delivered, lambda refused: spark_reasons(batch, refused))


def spark_reasons(batch: DataFrame, refused: list[Refused]) -> list[QuarantinedMessage]:
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
        out.append(QuarantinedMessage(r["topic"], partition, offset, times.utc_or_none(r["kafka_timestamp_ms"]),
                                      r["raw_value"], reason))
    return out


def spark_gather(batch: DataFrame, parsed: DataFrame, read: BatchRead) -> Gathered:
    """A batch through Spark: heartbeats and refused messages collected (few rows), the trades reduced to islands
    by one shuffle."""
    m = F.col("msg")
    side = parsed.where(F.col("reason").isNotNull() | (m["type"] == "heartbeat")).select(
        "topic", "partition", "offset", "kafka_timestamp_ms", "raw_value", "reason",
        m["s"].alias("symbol"), m["from"].alias("covered_from_ms"), m["T"].alias("complete_before_ms")).collect()
    quarantine = [QuarantinedMessage(r["topic"], r["partition"], r["offset"],
                                     times.utc_or_none(r["kafka_timestamp_ms"]), r["raw_value"], r["reason"])
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
            counts = self._apply(gathered, batch_id) if gathered.read.messages else BatchCounts()
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

    def _apply(self, g: Gathered, batch_id: int) -> BatchCounts | None:
        began, run = time.monotonic(), self.run
        counts = connection.with_retries(
            self.url, lambda cur: unit_of_work.apply(MysqlWindowStore(cur, run, QUERY), g, batch_id),
            f"batch {batch_id}", connection=self.connection)
        self._phase("mysql", began)
        return counts
