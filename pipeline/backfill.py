"""``pipeline backfill --source PATH ...``: history the stream never saw, through the same Spark job, as a batch.

    validate every source (nothing is written if one is bad)
    -> publish them into a private topic (<topic>.backfill.<run>), as `pipeline replay` would
    -> the streaming job over that topic until it is drained (availableNow: a batch run, bounded batches),
       with its own checkpoint, into the same tables
    -> delete the private topic and checkpoint

Who owns which window: windows are merged by agg id (ADR-9), so a backfill can never count a trade twice, whatever
the stream has or will have. It fills minutes the stream never saw and completes open ones; its archives' coverage
finalizes them. A minute already final is never changed: trades it lacks are counted late and kept in quarantine,
and `pipeline reconcile --repair` rewrites such a minute from the exchange. Repeating a backfill changes nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.settings import Settings


@dataclasses.dataclass
class Result:
    topic: str
    published: int
    invalid: int
    duplicates: int
    summary: Any  # the job's JobSummary


def run(settings: Settings, paths: list[Path], stop: Callable[[], bool],
        announce: Callable[[str], None]) -> Result:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from pipeline import compose, producer, replay
    from pipeline.services import stack
    from pipeline.spark.job import checkpoint_location

    counters = producer.Counters()
    sources, lowest = replay.open_sources(paths, counters, settings.watermark_seconds * 1000)  # all checked first
    run_id = uuid.uuid4().hex[:12]
    base = stack.checkpoint_dir(settings)
    checkpoint: Path | str = base / f"backfill-{run_id}" if isinstance(base, Path) else \
        checkpoint_location(base, f"backfill-{run_id}")
    mine = dataclasses.replace(settings, topic=f"{settings.topic}.backfill.{run_id}", checkpoint_dir=checkpoint)
    announce(f"backfill: {len(paths)} source(s) into private topic {mine.topic}")
    bootstrap = stack.kafka_bootstrap(settings)
    try:
        progress = producer.Progress(counters)
        replay.publish_items(mine, producer.merge_by_time(sources), lowest, counters, speed=None, stop=stop,
                             progress=progress)
        progress.done()
        announce(f"backfill: {counters.published:,} trades published; the Spark job computes their windows")
        summary = compose.process(mine, until_idle=True)
    finally:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000,
                                     **settings.kafka_client_options())
            try:
                if mine.topic in set(admin.list_topics()):
                    admin.delete_topics([mine.topic], timeout_ms=30_000)
            finally:
                admin.close()
        except KafkaError as exc:
            announce(f"backfill: could not delete {mine.topic} ({exc}); delete it by hand")
        if isinstance(checkpoint, Path):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return Result(mine.topic, counters.published, counters.invalid, counters.duplicates, summary)
