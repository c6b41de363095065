"""``pipeline bench``: how fast the pipeline is on this machine, side by side with what Spark and kafka-python do
alone, in one run. Prints one table (targets marked pass/FAIL, never asserted) and writes JSON to compare runs.

    processor   a topic pre-loaded with N generated aggTrades (5 symbols, BTCUSDT ~50x ADAUSDT, one day):
                ``pipeline process --until-idle`` next to a separate Spark session that reads the same topic with
                the same connector and options and only counts (the floor). Steady = from the first batch's start
                to the last batch's end, read from each query's own checkpoint log (``offsets/N`` holds the batch's
                start, ``batchTimestampMs``; ``commits/N`` is written when it ends); wall = the command, start
                included.
    replay      ``pipeline replay --speed max`` of archives holding the same trades, next to kafka-python sending
                the same pre-encoded messages with the sink's own producer settings (that load is also the
                processor's topic).
    outage      a long outage's live-mode traffic waiting in a topic, caught up by ``pipeline process --until-idle``.
    freshness   ``pipeline process`` running while trades stamped "now" arrive at live pace, with per-symbol
                coverage heartbeats each second (``T`` = now - HEARTBEAT_LAG_S), flushed first as the live producer
                does. Producer ack -> the batch that holds the trade's offset is visible in ``pipeline_batches``
                (committed together with its rows; polled every POLL_S); window end + lag -> ``is_final = 1``
                visible. Also: ``pipeline process`` start -> its first committed batch; and Spark's floor, a query
                that only counts, on the same trigger and pace.
    ledger      the same live pace on an empty ledger and on one holding a month of batches (synthetic
                ``pipeline_batches`` rows of the same run id: the checkpoint's query id is set beforehand):
                batch time p50/p95 from the checkpoint log, after the warm-up (the first quarter of the run, at
                most 30 s: a fresh JVM's first batches are slow; live figures are given with and without it).
    memory      peak RSS (``/proc``) of the processor's process tree (Python + the Spark driver JVM), of Kafka
                and of MySQL (the processes listening on their ports, when they run on this machine).

Each measurement gets its own topic, database (created and dropped by the schema owner) and checkpoint; topics are
deleted afterwards. The modules: ``options`` (parts and sizes), ``workload`` (the generated traffic), ``resources``
(services, topics, databases), ``scenarios`` (the measurements), ``live`` and ``watcher`` (live pace, and MySQL
read while it runs), ``probes`` (memory, checkpoints, the job's summary), ``report`` (progress, targets, table),
``runner`` (a run), ``floor`` with ``__main__`` (Spark's counting session, ``python -m pipeline.bench count TOPIC
CHECKPOINT [TRIGGER]``).
"""

from __future__ import annotations

from pipeline.bench.options import FULL, PARTS, QUICK, Options, Sizes
from pipeline.bench.report import table
from pipeline.bench.runner import measure, run

__all__ = ["FULL", "PARTS", "QUICK", "Options", "Sizes", "measure", "run", "table"]
