"""``pipeline replay --source PATH ...``: publish cassettes or Binance archives to Kafka (every source checked
first), skipping what the topic already holds."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.commands import signals
from pipeline.commands.context import Context
from pipeline.core.counters import Counters

if TYPE_CHECKING:
    from pipeline.producer import Item, Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="publish cassettes or Binance archives to Kafka")
    p.add_argument("--source", action="append", required=True,
                   help="a cassette (.yaml), an archive (<SYMBOL>-aggTrades-<date>.csv/.zip) or a directory of "
                        "them; repeatable")
    p.add_argument("--speed", default="max", help="max (default), 1x, or Nx such as 60x")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline import producer, replay

    speed = producer.parse_speed(args.speed)
    counters, notes = Counters(), list[str]()
    sources, lowest = replay.open_sources([Path(p) for p in args.source], counters,
                                          ctx.settings.watermark_seconds * 1000, notes)
    stop = signals.stop_event().is_set
    progress = producer.Progress(counters)
    publish(ctx, ctx.settings.topic, producer.merge_by_time(sources), lowest, counters, speed, stop, progress)
    elapsed = progress.done()
    print(f"replay: {counters.summary()} in {elapsed:.1f}s ({counters.published / max(elapsed, 1e-9):,.0f} trades/s)")
    for note in notes:
        print(f"replay: {note}")
    return 0 if not stop() else 130


def publish(ctx: Context, topic: str, items: Iterable[Item], lowest: dict[str, int], counters: Counters,
            speed: float | None, stop: Callable[[], bool], progress: Progress | None = None) -> None:
    """Publish validated sources into ``topic`` (created if missing), skipping the agg ids it already holds."""
    from pipeline import replay

    sink = ctx.sink(topic)
    try:
        published = replay.already_published(ctx.kafka_bootstrap(), topic, lowest, ctx.settings.kafka_client_options())
    except BaseException:
        sink.close()
        raise
    replay.publish_items(sink, published, items, counters, speed=speed, stop=stop, progress=progress)
