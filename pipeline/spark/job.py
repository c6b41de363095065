"""``pipeline process``: Kafka -> Spark Structured Streaming -> MySQL, exactly once.

Two streaming queries read the topic: ``windows`` (parse, classify, deduplicate, watermark, 1-minute windows,
update mode) and ``quarantine`` (messages that fail to parse or validate, kept with the reason and raw value).
Both write in ``foreachBatch`` through ``pipeline.adapters.mysql_store``, one transaction per batch together with
a ledger row, so a batch Spark re-executes after a crash changes nothing.

Finality: Spark's watermark for the next batch is (max event time so far - delay); a window ending at or before it
can no longer receive rows. The writer computes the same number from the batches it has applied (recorded in the
ledger) and marks those windows final in the same transaction. Quiet streams still close their windows because
producers publish heartbeats, which advance the event time without trades (see ``pipeline.spark.transforms``).

    events:     t=12:00:05  12:00:40  12:01:02            heartbeat T=12:02:00
    watermark (delay 10 s): 11:59:55  12:00:30  12:00:52  12:02:00
    final:                                                 [12:00, 12:01) and [12:01, 12:02)
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

from pipeline.adapters import kafka_io, mysql_store
from pipeline.core import windows
from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl, Settings
from pipeline.spark import transforms
from pipeline.spark.session import spark_session

log = logging.getLogger(__name__)


@dataclasses.dataclass
class JobSummary:
    batches: int = 0
    input_rows: int = 0
    windows_written: int = 0
    windows_finalized: int = 0
    final_rows_refused: int = 0
    quarantined: int = 0
    dropped_late: int = 0
    skipped_batches: int = 0  # re-executed batches the ledger had applied already
    spark_restarts: int = 0  # queries started again after SPARK-55271
    batch_ms: list[int] = dataclasses.field(default_factory=list)  # the windows query's trigger durations

    def line(self) -> str:
        durations = sorted(self.batch_ms)
        timing = ""
        if durations:
            p50, p95 = durations[len(durations) // 2], durations[min(len(durations) - 1, len(durations) * 95 // 100)]
            timing = f"; batch time p50 {p50} ms, p95 {p95} ms, max {durations[-1]} ms"
        return (f"{self.batches} batches, {self.input_rows} Kafka messages, {self.windows_written} window rows "
                f"written, {self.windows_finalized} became final, {self.quarantined} quarantined, "
                f"{self.dropped_late} late rows dropped, {self.final_rows_refused} updates to final rows refused, "
                f"{self.skipped_batches} re-executed batches skipped{timing}"
                + (f"; {self.spark_restarts} queries restarted after SPARK-55271" if self.spark_restarts else ""))


def run_id(checkpoint_dir: Path) -> str:
    """A stable id for this checkpoint (the ledger's key): created with it, gone with it."""
    path = checkpoint_dir / "pipeline-run-id"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(str(uuid.uuid4()))
    return path.read_text().strip()


def accumulator(row: Any) -> windows.Accumulator:
    """A Spark aggregate row -> the reference aggregator's accumulator (so ``result`` does the rounding)."""
    return windows.Accumulator(
        agg_trade_count=int(row["agg_trade_count"]), trade_count=int(row["trade_count"]),
        price_sum=row["price_sum"], volume=row["volume"], quote_volume=row["quote_volume"],
        open_id=row["open_id"], open_price=row["open_price"], close_id=row["close_id"],
        close_price=row["close_price"], high_price=row["high_price"], low_price=row["low_price"],
    )


class WindowWriter:
    def __init__(self, url: MysqlUrl, run: str, watermark_seconds: int, summary: JobSummary) -> None:
        self.url, self.run, self.delay_ms, self.summary = url, run, watermark_seconds * 1000, summary

    def __call__(self, batch: Any, batch_id: int) -> None:
        rows = batch.collect()
        batch_max = max((int(r["max_event_ms"]) for r in rows), default=None)
        previous = mysql_store.max_event_ms(self.url, self.run)
        max_event = max((m for m in (batch_max, previous) if m is not None), default=None)
        watermark = windows.watermark_ms(max_event, self.delay_ms)
        window_rows = [windows.result(r["symbol"], int(r["start_ms"]), accumulator(r))
                       for r in rows if r["symbol"] != transforms.HEARTBEAT_SYMBOL and r["agg_trade_count"] > 0]
        result = mysql_store.apply_windows(self.url, self.run, batch_id, window_rows, max_event, watermark)
        self.summary.batches += 1
        if not result.applied:
            self.summary.skipped_batches += 1
            log.warning("batch %d was applied before (re-execution after a restart): skipped", batch_id)
        self.summary.windows_written += result.rows_written
        self.summary.windows_finalized += result.rows_finalized
        self.summary.final_rows_refused += result.final_rows_refused


class QuarantineWriter:
    def __init__(self, url: MysqlUrl, run: str, summary: JobSummary) -> None:
        self.url, self.run, self.summary = url, run, summary

    def __call__(self, batch: Any, batch_id: int) -> None:
        messages = [mysql_store.QuarantinedMessage(r["topic"], r["partition"], r["offset"], r["kafka_timestamp"],
                                                   r["raw_value"], r["reason"]) for r in batch.collect()]
        added = mysql_store.apply_quarantine(self.url, self.run, batch_id, messages)
        if added:
            log.warning("batch %d: %d messages quarantined", batch_id, added)
        self.summary.quarantined += added


def _is_spark_55271(exc: BaseException | None) -> bool:
    """Spark 4.1.1's Kafka source throws an NPE while reporting progress for a batch re-executed after a restart
    (SPARK-55271 / SPARK-57438). The batch itself has completed and is committed when it happens, so starting the
    query again from its checkpoint simply goes on. Nothing else is retried."""
    text = str(exc or "")
    return "scala.Option.get()" in text and "IterableOps.map" in text


def run(settings: Settings, bootstrap: str, url: MysqlUrl, checkpoint_dir: Path, until_idle: bool,
        trigger_seconds: float = 1.0, stop: threading.Event | None = None) -> JobSummary:
    from pyspark.errors import StreamingQueryException

    mysql_store.migrate(url)
    kafka_io.ensure_topic(bootstrap, settings.topic)
    run = run_id(checkpoint_dir)
    summary = JobSummary()
    spark = spark_session(settings.cache_dir)
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        # Never skip data silently: if offsets vanished (retention), stop and say so.
        .option("failOnDataLoss", "true")
        .load()
    )
    classified = transforms.classify(transforms.parse(source))
    aggregates = transforms.aggregate(transforms.to_events(classified, settings.watermark_seconds),
                                      settings.watermark_seconds)
    trigger: dict[str, Any] = {"availableNow": True} if until_idle else {"processingTime": f"{trigger_seconds} seconds"}
    starters = {
        "windows": lambda: aggregates.writeStream.queryName("windows").outputMode("update")
        .foreachBatch(WindowWriter(url, run, settings.watermark_seconds, summary))
        .option("checkpointLocation", str(checkpoint_dir / "windows")).trigger(**trigger).start(),
        "quarantine": lambda: transforms.quarantined(classified).writeStream.queryName("quarantine")
        .outputMode("append").foreachBatch(QuarantineWriter(url, run, summary))
        .option("checkpointLocation", str(checkpoint_dir / "quarantine")).trigger(**trigger).start(),
    }
    queries = {name: start() for name, start in starters.items()}
    restarts = dict.fromkeys(queries, 0)
    stop = stop or _stop_on_signals()
    finished: dict[str, Any] = {}
    try:
        while len(finished) < len(queries) and not stop.is_set():
            for name, query in list(queries.items()):
                if name in finished:
                    continue
                if until_idle:
                    try:
                        query.awaitTermination()
                    except StreamingQueryException:
                        pass
                elif query.isActive:
                    continue
                exc = query.exception()
                if exc is not None and _is_spark_55271(exc) and restarts[name] < 3:
                    restarts[name] += 1
                    summary.spark_restarts += 1
                    log.warning("query %s hit Spark bug SPARK-55271 after a restart; starting it again", name)
                    _collect(query, summary)
                    queries[name] = starters[name]()
                    continue
                if exc is not None:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ServiceError(f"the Spark query {name} failed: {first[:500]} (its checkpoint is kept; "
                                       "fix the cause and run again)") from exc
                finished[name] = query
            if not until_idle:
                stop.wait(1.0)
    finally:
        for query in queries.values():
            if query.isActive:
                query.stop()
    for query in queries.values():
        _collect(query, summary)
    return summary


def _collect(query: Any, summary: JobSummary) -> None:
    for progress in query.recentProgress:
        if query.name == "windows":
            summary.input_rows += int(progress.get("numInputRows", 0))
            if int(progress.get("numInputRows", 0)) > 0:
                summary.batch_ms.append(int(progress.get("durationMs", {}).get("triggerExecution", 0)))
        for state in progress.get("stateOperators", []):
            summary.dropped_late += int(state.get("numRowsDroppedByWatermark", 0))


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
