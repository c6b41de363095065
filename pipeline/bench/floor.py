"""Spark alone, as the bench's yardstick: a query on the job's connector and source options whose ``foreachBatch``
only counts. Drained (``availableNow``), it is the processor's floor; on the live trigger, fed at live pace, the
floor of a live batch. Runs in a process of its own (``python -m pipeline.bench count ...``, ``__main__``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from pipeline.settings import Settings


def count_topic(spark: Any, bootstrap: str, settings: Settings, topic: str, checkpoint: str,
                trigger_s: float | None = None) -> int:
    """Messages counted in ``topic``. ``trigger_s`` None: until the topic is drained; else on that processing-time
    trigger until SIGTERM."""
    counted: list[int] = []
    source = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic).option("startingOffsets", "earliest").option("failOnDataLoss", "true")
              .option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
              .options(**settings.kafka_spark_options()).load())
    trigger: dict[str, Any] = ({"availableNow": True} if trigger_s is None
                               else {"processingTime": f"{trigger_s} seconds"})
    query = (source.writeStream.foreachBatch(lambda batch, _id: counted.append(batch.count()))
             .option("checkpointLocation", checkpoint).trigger(**trigger).start())
    if trigger_s is None:
        query.awaitTermination()
    else:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.is_set() and query.isActive:
            stop.wait(0.2)
        query.stop()
    spark.stop()
    return sum(counted)
