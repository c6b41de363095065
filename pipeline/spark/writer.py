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
server cut by the client's timeouts) are retried with backoff for up to ``mysql_store.RETRY_SECONDS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import Counter
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.adapters import mysql_store
from pipeline.core import coverage, merging, windows
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
    counts: mysql_store.BatchCounts = mysql_store.BatchCounts()  # this run's sums of the ledger's figures
    skipped_batches: int = 0  # re-executed batches the ledger had applied already
    spark_restarts: int = 0  # queries started again after SPARK-55271
    batch_ms: list[int] = dataclasses.field(default_factory=list)
    # where batch time goes, summed over the run (seconds): read (Kafka, JSON parse, cache, fingerprint), side
    # (heartbeats and rejected messages), islands (the shuffle and aggregation), mysql (the transaction)
    phase_s: dict[str, float] = dataclasses.field(default_factory=dict)
    checkpoint_totals: mysql_store.BatchCounts | None = None  # the ledger's sums over every run of the checkpoint

    def add(self, counts: mysql_store.BatchCounts) -> None:
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
    parts = sorted((r["topic"], int(r["partition"]), int(r["first"]), int(r["last"]), int(r["n"]), int(r["x"]))
                   for r in rows)
    offsets = " ".join(f"{t}/{p}:{a}-{b}" for t, p, a, b, _, _ in parts)
    digest = hashlib.sha256("\n".join(f"{t}/{p}:{a}-{b} n={n} x={x}" for t, p, a, b, n, x in parts).encode())
    return BatchRead(sum(p[4] for p in parts), offsets, digest.hexdigest())


def cached_columns(classified: DataFrame) -> DataFrame:
    """What the later steps of a batch read, as cached: the raw value only where it is kept (a rejected message;
    late trades fetch theirs from Kafka, rarely), and a hash of every message for the fingerprint. Caching every raw
    value cost more than parsing it (issue 11)."""
    return (classified.withColumn("value_hash", F.xxhash64("offset", "kafka_timestamp_ms", "raw_value"))
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


def _exact_trades(trade_rows: DataFrame, keys: set[Key]) -> dict[Key, list[Trade]]:
    out: dict[Key, list[Trade]] = {k: [] for k in keys}
    for r in in_windows(trade_rows, keys).collect():
        out[(r["symbol"], int(r["start_ms"]))].append(Trade(
            r["symbol"], int(r["agg_id"]), r["price"], r["quantity"], int(r["first_trade_id"]),
            int(r["last_trade_id"]), int(r["event_ms"]), bool(r["buyer_is_maker"]), True))
    return out


class BatchWriter:
    """``run`` (the checkpoint's query id, recorded on ledger rows) may be given after the query started:
    batches wait for it."""

    def __init__(self, url: MysqlUrl, summary: JobSummary, run: str | None = None) -> None:
        self.url, self.summary = url, summary
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
        parsed = cached_columns(transforms.classify(transforms.parse(batch))).persist()
        self._reading = None
        try:
            counts, inputs = self._apply(batch, parsed, batch_id)
        except BaseException as exc:
            self.failed = f"batch {batch_id}" + (f" ({self._reading})" if self._reading else "")
            log.error("%s failed: %s", self.failed, str(exc).strip().splitlines()[0][:500] if str(exc).strip()
                      else type(exc).__name__)
            raise
        finally:
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

    def _apply(self, batch: DataFrame, parsed: DataFrame, batch_id: int,
               ) -> tuple[mysql_store.BatchCounts | None, int]:
        m = F.col("msg")
        began = time.monotonic()
        read = batch_read(parsed)
        if not read.messages:
            return mysql_store.BatchCounts(), 0
        self._reading = f"{read.messages:,} messages at offsets {read.offsets}"
        began = self._phase("read", began)
        side = parsed.where(F.col("reason").isNotNull() | (m["type"] == "heartbeat")).select(
            "topic", "partition", "offset", "kafka_timestamp_ms", "raw_value", "reason",
            m["s"].alias("symbol"), m["from"].alias("covered_from_ms"), m["T"].alias("complete_before_ms")).collect()
        quarantine = [mysql_store.QuarantinedMessage(r["topic"], r["partition"], r["offset"],
                                                     mysql_store.utc_or_none(r["kafka_timestamp_ms"]), r["raw_value"],
                                                     r["reason"])
                      for r in side if r["reason"]]
        beats = [(r["symbol"], int(r["partition"]), int(r["offset"]), int(r["covered_from_ms"]),
                  int(r["complete_before_ms"])) for r in side if not r["reason"]]
        began = self._phase("side", began)
        trade_rows = transforms.trades(parsed)
        pieces = cover_frame(batch.sparkSession, beats)
        flagged = transforms.flag_behind(trade_rows, pieces)
        islands, behind = collect_islands(flagged)
        began = self._phase("islands", began)
        run = self.run

        def transact(cur: Any) -> mysql_store.BatchCounts | None:
            if not mysql_store.claim_batch(cur, run, QUERY, batch_id, read.fingerprint, read.offsets):
                return None
            stored = mysql_store.load_windows(cur, {(i.symbol, i.start_ms) for i in islands})
            symbols = {i.symbol for i in islands} | {b[0] for b in beats}
            before = mysql_store.load_coverage(cur, symbols)
            normal = trade_rows if not behind else flagged.where(~F.col("after"))
            outcomes = merging.settle(stored, before, islands, lambda keys: _exact_trades(normal, keys))
            duplicates = sum(o.duplicates for o in outcomes.values())
            late_kept: list[tuple[Key, mysql_store.QuarantinedMessage]] = []
            closed = {k for k, o in outcomes.items() if o.late}
            if closed or behind:  # rare: fetch the late trades themselves
                late_kept, more_duplicates = self._late(batch, parsed, closed, pieces if behind else None, stored,
                                                        outcomes)
                duplicates += more_duplicates
            new = mysql_store.add_quarantine(cur, [*quarantine, *(msg for _, msg in late_kept)])
            # A late trade counts once: a batch applied again under another cut finds it kept already.
            late = Counter(key for key, msg in late_kept if msg.identity in new)
            duplicates += sum(1 for _, msg in late_kept if msg.identity not in new)
            written = mysql_store.write_windows(cur, [
                (windows.result(k[0], k[1], o.acc), o.acc, o.id_ranges) for k, o in outcomes.items() if o.merged])
            mysql_store.add_late(cur, [(k[0], k[1], n) for k, n in late.items()
                                       if k in stored or (k in outcomes and outcomes[k].merged)])
            finalized = 0
            for symbol in sorted(symbols):
                new_ranges = [(start, end - 1) for s, _, _, start, end in beats if s == symbol and end > start]
                ranges = coverage.union([*before.get(symbol, []), *new_ranges])
                if ranges != before.get(symbol, []):
                    mysql_store.save_coverage(cur, symbol, ranges)
                finalized += mysql_store.finalize(cur, symbol, ranges)
            counts = mysql_store.BatchCounts(
                trades_merged=sum(o.merged for o in outcomes.values()), duplicates=duplicates,
                late_trades=sum(late.values()), quarantined=len(new), rows_written=written, rows_finalized=finalized)
            mysql_store.record_batch(cur, QUERY, read.fingerprint, counts)
            return counts

        counts = mysql_store.with_retries(self.url, transact, f"batch {batch_id}")
        self._phase("mysql", began)
        return counts, read.messages

    @staticmethod
    def _late(batch: DataFrame, parsed: DataFrame, closed: set[Key], pieces: DataFrame | None,
              stored: dict[Key, merging.Stored], outcomes: dict[Key, merging.Outcome],
              ) -> tuple[list[tuple[Key, mysql_store.QuarantinedMessage]], int]:
        """The late trades themselves, to be kept where an operator (or a backfill) can find them: those of windows
        that were closed before the batch, and those behind a heartbeat that covers them in this batch. A
        redelivery of a counted trade is a duplicate, not late (those behind a heartbeat are counted here, the
        others by ``merging``)."""
        flagged = transforms.flag_behind(transforms.trades(parsed, "topic", "kafka_timestamp_ms"), pieces)
        wanted = flagged.where("after")
        if closed:
            wanted = wanted.unionByName(in_windows(flagged.where(~F.col("after")), closed))
        rows = wanted.collect()
        wanted_at = batch.sparkSession.createDataFrame(
            sorted({(int(r["partition"]), int(r["offset"])) for r in rows}), "partition int, offset long")
        raw = {(int(r["partition"]), int(r["offset"])): r["raw_value"] for r in batch.join(
            F.broadcast(wanted_at), ["partition", "offset"], "left_semi").select(
            "partition", "offset", F.col("value").cast("string").alias("raw_value")).collect()} if rows else {}
        kept: list[tuple[Key, mysql_store.QuarantinedMessage]] = []
        duplicates, seen = 0, set[tuple[str, int]]()
        for r in sorted(rows, key=lambda r: (r["partition"], r["offset"])):
            key, agg_id = (r["symbol"], int(r["start_ms"])), int(r["agg_id"])
            counted = outcomes[key].id_ranges if key in outcomes else stored[key].id_ranges if key in stored else ()
            if coverage.contains(counted, agg_id) or (key[0], agg_id) in seen:
                duplicates += 1 if r["after"] else 0  # the others were counted by merging
                continue
            seen.add((key[0], agg_id))
            kept.append((key, mysql_store.QuarantinedMessage(
                r["topic"], r["partition"], r["offset"], mysql_store.utc_or_none(r["kafka_timestamp_ms"]),
                raw[(int(r["partition"]), int(r["offset"]))],
                f"late: window {key[0]} {mysql_store.utc(key[1]):%Y-%m-%d %H:%M} was already declared complete")))
        return kept, duplicates
