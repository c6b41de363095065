"""``pipeline backfill --source PATH ... | --symbol S --from T --until T``: history the stream never saw, through
the same Spark job, as a batch (archives and cassettes, or aggTrades fetched from Binance by time).

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
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Result:
    topic: str
    published: int
    invalid: int
    duplicates: int
    summary: Any  # the job's JobSummary; None: interrupted before the job ran


def exchange_trades(client: Any, symbol: str, from_ms: int, until_ms: int,
                    counters: Any) -> tuple[Iterator[Any], int | None]:
    """The aggTrades of ``symbol`` with ``from_ms <= T < until_ms``, fetched page by page as they are published
    (memory stays one page whatever the range), then a heartbeat covering the range; and the first agg id (None:
    nothing in the range). The first id comes from ``poller.first_id_at``, which does not trust how Binance cuts
    a time range."""
    from pipeline.core.messages import Heartbeat
    from pipeline.poller import first_id_at, trades_between

    first = first_id_at(client, symbol, from_ms)

    def pages() -> Iterator[Any]:
        yield from trades_between(client, symbol, from_ms, until_ms, counters)
        yield Heartbeat(symbol, from_ms, until_ms)

    return pages(), first


def run(settings: Settings, paths: list[Path], stop: Callable[[], bool],
        announce: Callable[[str], None], fetched: list[tuple[Iterator[Any], dict[str, int]]] | None = None,
        counters: Any = None) -> Result:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from pipeline import compose, producer, replay
    from pipeline.core.counters import Counters
    from pipeline.services import stack
    from pipeline.spark.job import checkpoint_location

    counters = counters or Counters()
    sources, lowest = replay.open_sources(paths, counters, settings.watermark_seconds * 1000)  # all checked first
    sources = [*sources, *(items for items, _ in fetched or [])]
    for _, first_ids in fetched or []:
        for symbol, agg_id in first_ids.items():
            lowest[symbol] = min(lowest.get(symbol, agg_id), agg_id)
    run_id = uuid.uuid4().hex[:12]
    base = stack.checkpoint_dir(settings)
    checkpoint: Path | str = base / f"backfill-{run_id}" if isinstance(base, Path) else \
        checkpoint_location(base, f"backfill-{run_id}")
    mine = dataclasses.replace(settings, topic=f"{settings.topic}.backfill.{run_id}", checkpoint_dir=checkpoint)
    announce(f"backfill: {len(sources)} source(s) into private topic {mine.topic}")
    bootstrap = stack.kafka_bootstrap(settings)
    try:
        progress = producer.Progress(counters)
        replay.publish_items(mine, producer.merge_by_time(sources), lowest, counters, speed=None, stop=stop,
                             progress=progress)
        progress.done()
        if stop():  # interrupted while publishing: compute nothing from half of it
            announce("backfill: interrupted; nothing computed (run it again: what was published is dropped)")
            return Result(mine.topic, counters.published, counters.invalid, counters.duplicates, None)
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
