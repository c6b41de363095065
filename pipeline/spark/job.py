"""``pipeline process``: Kafka -> Spark Structured Streaming -> MySQL, exactly once.

One streaming query reads the topic; each micro-batch goes through ``pipeline.spark.writer.BatchWriter``: trades
become exact per-minute islands in Spark and are merged into the windows MySQL holds, malformed messages are kept
in quarantine with their reason, heartbeats extend each symbol's known-complete coverage, and covered windows turn
final, all in one transaction with a ledger row, so a batch Spark re-executes after a crash changes nothing.

There is no event-time watermark in Spark (ADR-9): a window is final when a producer declared its minute complete
for its symbol, never because another symbol's or another producer's trades ran ahead::

    BTCUSDT trades  12:00:05 ... 12:00:59 | heartbeat BTCUSDT [11:58:00, 12:01:00)  -> BTCUSDT 12:00 final
    ADAUSDT trades  12:00:40              | (no heartbeat yet)                       -> ADAUSDT 12:00 stays open
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.adapters import kafka_io
from pipeline.adapters.mysql import ledger, migrations
from pipeline.errors import ServiceError
from pipeline.settings import DEFAULT_TRIGGER_SECONDS, MysqlUrl, Settings
from pipeline.spark import writer
from pipeline.spark.writer import JobSummary

log = logging.getLogger(__name__)


def _is_spark_55271(exc: BaseException | None) -> bool:
    """Spark 4.1.1's Kafka source throws an NPE while reporting progress for a batch re-executed after a restart
    (SPARK-55271 / SPARK-57438). The batch itself has completed and is committed when it happens, so starting the
    query again from its checkpoint simply goes on. Nothing else is retried."""
    text = str(exc or "")
    return "scala.Option.get()" in text and "IterableOps.map" in text


def checkpoint_location(checkpoint_dir: Path | str, name: str) -> str:
    """A query's checkpoint under ``checkpoint_dir``: a local path, or a URL such as ``hdfs://nn:8020/ckpt``."""
    if isinstance(checkpoint_dir, Path):
        return str(checkpoint_dir / name)
    return f"{checkpoint_dir.rstrip('/')}/{name}"


def run(settings: Settings, bootstrap: str, url: MysqlUrl, checkpoint_dir: Path | str, until_idle: bool,
        trigger_seconds: float = DEFAULT_TRIGGER_SECONDS, stop: threading.Event | None = None, *,
        spark: Callable[[], Any]) -> JobSummary:
    """The streaming job until stopped (or, ``until_idle``, until the topic is drained). ``spark`` makes the
    session (``pipeline.compose.spark_session``), once the schema and topic are known to be there."""
    from pyspark.errors import StreamingQueryException

    migrations.ensure_schema(url, settings.mysql_admin_url)
    kafka_io.ensure_topic(bootstrap, settings.topic, settings.topic_partitions, settings.kafka_client_options())
    summary = JobSummary()
    batch_writer = writer.BatchWriter(url, summary, driver_batch_max=settings.driver_batch_max)
    source = _source(spark(), bootstrap, settings)
    trigger: dict[str, Any] = {"availableNow": True} if until_idle else {"processingTime": f"{trigger_seconds} seconds"}

    def start() -> Any:
        # A stateless query: the window state is in MySQL, so the checkpoint holds only offsets ("stream", not
        # the stateful "windows" checkpoint of schema 1, which Spark could not resume with this plan).
        query = (source.writeStream.queryName(writer.QUERY).foreachBatch(batch_writer)
                 .option("checkpointLocation", checkpoint_location(checkpoint_dir, "stream")).trigger(**trigger)
                 .start())
        # The ledger's run id is the query's id, which Spark keeps in the checkpoint itself (any file system,
        # hdfs:// and s3a:// included): created with the checkpoint, gone with it, never a side file that can
        # disagree.
        batch_writer.run = str(query.id)
        return query

    query = start()
    stop = stop or _stop_on_signals()
    try:
        while not stop.is_set():
            if until_idle:
                with contextlib.suppress(StreamingQueryException):
                    query.awaitTermination()
            if not query.isActive:
                exc = query.exception()
                if exc is None:
                    break
                if not _is_spark_55271(exc) or summary.spark_restarts >= 3:
                    raise _failure(exc, batch_writer.failed, settings) from exc
                summary.spark_restarts += 1
                log.warning("query %s hit Spark bug SPARK-55271 after a restart; starting it again", writer.QUERY)
                query = start()
            if not until_idle:
                stop.wait(1.0)
    finally:
        if query.isActive:
            query.stop()
        batch_writer.connection.close()
    if batch_writer.ready:
        summary.checkpoint_totals = ledger.run_totals(url, batch_writer.run)
    return summary


def _source(session: Any, bootstrap: str, settings: Settings) -> Any:
    """The topic as a streaming DataFrame."""
    return (
        session.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        # Never skip data silently: if offsets vanished (retention), stop and say so.
        .option("failOnDataLoss", "true")
        # Batches stay bounded (driver memory, statement sizes) whatever the backlog; with no watermark, how a
        # backlog is split cannot change a result (PIPELINE_MAX_OFFSETS_PER_TRIGGER).
        .option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
        # PIPELINE_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings as kafka.* options (none by default).
        .options(**settings.kafka_spark_options())
        .load()
    )


def _failure(exc: BaseException, failed: str | None, settings: Settings) -> ServiceError:
    """What to tell the operator when the query failed (``failed``: the batch that raised, if the writer knows)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ServiceError(
        f"the Spark query {writer.QUERY} failed on {failed or 'a batch'}: {first[:500]} (its checkpoint is kept; fix "
        f"the cause and run again; if the batch is too large for this driver, run again with a smaller "
        f"PIPELINE_MAX_OFFSETS_PER_TRIGGER, now {settings.max_offsets_per_trigger:,})")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
