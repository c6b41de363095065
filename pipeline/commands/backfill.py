"""``pipeline backfill --source PATH ... | --symbol S --from T --until T``: history the stream never saw, through
the same Spark job, as a batch (archives and cassettes, or aggTrades fetched from Binance by time).

    validate every source (nothing is written if one is bad)
    -> publish them into a private topic (<topic>.backfill.<run>), as `pipeline replay` would
    -> the streaming job over that topic until it is drained (availableNow: a batch run, bounded batches),
       with its own checkpoint, into the same tables
    -> delete the private topic and checkpoint

Who owns which window: windows are merged by agg id (ADR-9), so a backfill can never count a trade twice, whatever
the stream has or will have. It fills minutes the stream never saw and completes open ones; its archives' coverage
finalizes them (an archive vouches for its whole day only when its Binance checksum matches; else for the stretch
between its first and last trade). A minute already final is never changed: trades it lacks are counted late and
kept in quarantine, and `pipeline reconcile --repair` rewrites such a minute from the exchange. Repeating a backfill
changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.commands import args as checks
from pipeline.commands import signals
from pipeline.commands.context import Context
from pipeline.core.counters import Counters
from pipeline.core.trades import MIN_TIME_MS
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backfill", help="compute the windows of archives or cassettes the stream never saw, with "
                       "the same Spark job as a batch, into the same tables (never counting a trade twice, never "
                       "changing a final minute)")
    p.add_argument("--source", action="append", help="archive, cassette or directory (repeatable); every source "
                                                      "is checked before anything is written")
    p.add_argument("--symbol", action="append", help="fetch this symbol's aggTrades from Binance by time "
                                                      "(repeatable; with --from and --until)")
    p.add_argument("--from", dest="start", help="first instant fetched, ISO UTC (e.g. 2026-01-01T00:00)")
    p.add_argument("--until", help="end of the fetched range (exclusive), ISO UTC; settled: at least "
                                    "PIPELINE_WATERMARK_SECONDS in the past")
    p.add_argument("--base-url", default=checks.EXCHANGE, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def announce(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, ctx: Context) -> int:
    by_time = args.start is not None or args.until is not None or args.symbol
    if not args.source and not by_time:
        raise ConfigError("give --source PATH, or --symbol S with --from and --until (ISO UTC)")
    counters = Counters()
    fetched = _fetch(args, ctx, counters) if by_time else []
    result = backfill(ctx, [Path(p) for p in args.source or []], signals.stop_event().is_set, announce, fetched,
                      counters)
    if result.summary is None:
        return 130
    counts = result.summary.counts
    print(f"backfill: published {result.published} trades (invalid {result.invalid}, already in the topic "
          f"{result.duplicates}); {result.summary.line()}")
    for note in result.notes:
        print(f"backfill: {note}")
    if counts.late_trades:
        print(f"backfill: {counts.late_trades} trades belong to minutes already final: counted late, kept in "
              "quarantine, not applied; `pipeline reconcile --repair` rewrites such minutes from the exchange")
    return 0


def _fetch(args: argparse.Namespace, ctx: Context, counters: Counters) -> list[tuple[Iterator[Any], dict[str, int]]]:
    """Each ``--symbol``'s trades of ``[--from, --until)`` as the exchange pages them, with its first agg id."""
    from_ms, until_ms = checks.utc_ms(args.start, "--from"), checks.utc_ms(args.until, "--until")
    if from_ms is None or until_ms is None or not args.symbol:
        raise ConfigError("fetching by time needs --symbol, --from and --until")
    symbols = [checks.symbol(s) for s in dict.fromkeys(s.upper() for s in args.symbol)]
    settled_ms = checks.now_ms() - ctx.settings.watermark_seconds * 1000
    if not MIN_TIME_MS <= from_ms < until_ms <= settled_ms:
        raise ConfigError("--from must be before --until, after 2017, and --until at least "
                          f"PIPELINE_WATERMARK_SECONDS ({ctx.settings.watermark_seconds} s) in the past")
    client = ctx.exchange(args.base_url)
    fetched = []
    for symbol in symbols:
        items, first = exchange_trades(client, symbol, from_ms, until_ms, counters)
        fetched.append((items, {symbol: first} if first is not None else {}))
        announce(f"backfill: {symbol} from agg id {first} ({checks.utc_text(from_ms)} .. {checks.utc_text(until_ms)})")
    return fetched


@dataclasses.dataclass
class Result:
    topic: str
    published: int
    invalid: int
    duplicates: int
    summary: Any  # the job's JobSummary; None: interrupted before the job ran
    notes: list[str] = dataclasses.field(default_factory=list)  # archives that vouch for less than their name says


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


def backfill(ctx: Context, paths: list[Path], stop: Callable[[], bool], announce: Callable[[str], None],
             fetched: list[tuple[Iterator[Any], dict[str, int]]] | None = None,
             counters: Counters | None = None) -> Result:
    """Validate every source, publish them into a private topic, run the job over it until drained, clean up."""
    from pipeline import producer, replay
    from pipeline.adapters import kafka_io
    from pipeline.commands.process import job
    from pipeline.commands.replay import publish
    from pipeline.errors import ServiceError
    from pipeline.spark.job import checkpoint_location

    settings, counters, notes = ctx.settings, counters or Counters(), list[str]()
    sources, lowest = replay.open_sources(paths, counters, settings.watermark_seconds * 1000, notes)  # all checked
    sources = [*sources, *(items for items, _ in fetched or [])]
    for _, first_ids in fetched or []:
        for symbol, agg_id in first_ids.items():
            lowest[symbol] = min(lowest.get(symbol, agg_id), agg_id)
    run_id = uuid.uuid4().hex[:12]
    base = ctx.checkpoint()
    checkpoint: Path | str = base / f"backfill-{run_id}" if isinstance(base, Path) else \
        checkpoint_location(base, f"backfill-{run_id}")
    mine = dataclasses.replace(settings, topic=f"{settings.topic}.backfill.{run_id}", checkpoint_dir=checkpoint)
    announce(f"backfill: {len(sources)} source(s) into private topic {mine.topic}")
    summary = None
    try:
        progress = producer.Progress(counters)
        publish(ctx, mine.topic, producer.merge_by_time(sources), lowest, counters, None, stop, progress)
        progress.done()
        if stop():  # interrupted while publishing: compute nothing from half of it
            announce("backfill: interrupted; nothing computed (run it again: what was published is dropped)")
        else:
            announce(f"backfill: {counters.published:,} trades published; the Spark job computes their windows")
            summary = job(ctx, mine, until_idle=True)
    finally:
        try:
            kafka_io.delete_topics(ctx.kafka_bootstrap(), [mine.topic], settings.kafka_client_options())
        except ServiceError as exc:
            announce(f"backfill: could not delete {mine.topic} ({exc}); delete it by hand")
        if isinstance(checkpoint, Path):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return Result(mine.topic, counters.published, counters.invalid, counters.duplicates, summary, notes)
