"""``pipeline produce --mode live``: poll Binance and publish every trade to Kafka, with coverage heartbeats,
resuming after what the topic already holds."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.commands import args as checks
from pipeline.commands import signals
from pipeline.commands.context import Context
from pipeline.core.counters import Counters
from pipeline.errors import ConfigError, ExchangeError, PipelineError

if TYPE_CHECKING:
    from pipeline.adapters.binance import BinanceClient
    from pipeline.core.messages import ResumePoint
    from pipeline.poller import SymbolState


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="poll Binance and publish trades to Kafka, forever")
    p.add_argument("--mode", choices=["live"], required=True)
    p.add_argument("--start", help="where a symbol without trades in Kafka begins (epoch ms or ISO time, rounded "
                                    "down to its minute); default: the current minute")
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="seconds between requests for a symbol that is caught up")
    p.add_argument("--weight-budget", type=int, default=3000, help="request weight per minute to stay under")
    p.add_argument("--request-timeout", type=float, default=15.0, help="seconds to wait for an answer")
    p.add_argument("--max-catch-up-ids", type=int, default=20_000_000,
                   help="refuse to resume further than this many agg ids behind Binance's newest")
    p.add_argument("--base-url", default=checks.EXCHANGE, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline import poller, producer
    from pipeline.core.trades import Sequencer

    checks.positive(args.poll_interval, "--poll-interval", checks.LONGEST_WAIT_S)
    checks.positive(args.request_timeout, "--request-timeout", checks.LONGEST_WAIT_S)
    checks.positive(args.weight_budget, "--weight-budget", 6000)  # Binance's limit per minute
    start_ms = checks.start_ms(args.start) if args.start else checks.now_ms()
    stopping = signals.stop_event()
    stop, sleep = stopping.is_set, signals.interruptible(stopping)
    sink, counters = ctx.sink(), Counters()
    client = ctx.exchange(args.base_url, weight_budget=args.weight_budget, timeout_s=(5.0, args.request_timeout),
                          sleep=sleep)
    try:
        resume = _resume(ctx, client, args.max_catch_up_ids, counters, sleep, stop)
    except PipelineError:
        sink.close()
        raise
    settings = ctx.settings
    states = poller.start_states(settings.symbols, resume, start_ms)
    _announce(states, resume)
    progress = producer.Progress(counters, detail=lambda: poller.lag_report(states.values(), checks.now_ms()),
                                 quiet_every_s=10.0)
    items = poller.poll(client, states, counters, lag_ms=settings.watermark_seconds * 1000,
                        poll_interval_s=args.poll_interval, sleep=sleep, stop=stop, on_answer=progress.tick)
    try:
        producer.publish(items, sink, Sequencer({s: p.last_agg_id for s, p in resume.items()
                                                 if p.last_agg_id is not None}), counters,
                         progress=progress, stop=stop, batch_size=1000)
        # A clean stop leaves the newest coverage in Kafka, so the job can close what was fetched.
        producer.publish(poller.final_heartbeats(states.values()), sink, Sequencer(), counters)
    except ExchangeError as exc:
        raise ConfigError(f"{exc} (check PIPELINE_SYMBOLS)") from exc
    finally:
        sink.close()
        print(f"produce: {counters.summary()}, {client.attempts_retried} failed attempts retried by the HTTP "
              "session", file=sys.stderr)
    return 0


def _resume(ctx: Context, client: BinanceClient, max_catch_up_ids: int, counters: Counters,
            sleep: Callable[[float], None], stop: Callable[[], bool]) -> dict[str, ResumePoint]:
    """Where each symbol resumes: the topic's tail first; the whole topic when the tail is not enough."""
    from pipeline import poller
    from pipeline.adapters import kafka_io

    settings, bootstrap = ctx.settings, ctx.kafka_bootstrap()
    options = settings.kafka_client_options()
    try:
        resume = _found(kafka_io.resume_points(bootstrap, settings.topic, settings.symbols, options=options))
        missing = [s for s in settings.symbols if s not in resume]
        problems = poller.check_resume(client, resume, max_catch_up_ids, counters, sleep, stop)
        if problems or missing:  # the tail may hold a replay, or bury a quiet symbol: read the whole topic
            print(f"produce: {'; '.join(problems.values()) or ', '.join(missing) + ' not in the topic tail'}; "
                  "scanning the whole topic", file=sys.stderr)
            resume = _found(kafka_io.resume_points(bootstrap, settings.topic, settings.symbols, max_scan=None,
                                                   options=options))
            problems = poller.check_resume(client, resume, max_catch_up_ids, counters, sleep, stop)
    except ExchangeError as exc:
        raise ConfigError(f"{exc} (check PIPELINE_SYMBOLS)") from exc
    if problems:
        raise ConfigError("; ".join(problems.values()) + f" (topic {settings.topic}: produce into a fresh "
                          "PIPELINE_TOPIC, or raise --max-catch-up-ids to walk the history)")
    return resume


def _found(resume: dict[str, ResumePoint]) -> dict[str, ResumePoint]:
    for symbol, point in resume.items():
        if point.last_agg_id is not None:
            print(f"{symbol}: resuming after agg id {point.last_agg_id} (already in Kafka)", file=sys.stderr)
    return resume


def _announce(states: dict[str, SymbolState], resume: dict[str, ResumePoint]) -> None:
    for symbol, state in states.items():
        point = resume.get(symbol)
        if point is None:
            where = f"starting at {checks.iso_second(state.covered_from_ms)} (the start of the start point's minute)"
        elif point.last_agg_id is None:
            where = (f"resuming at {checks.iso_second(state.covered_from_ms)} (the newest coverage in Kafka; trades "
                     "located by time)")
        else:
            continue  # said by _found
        print(f"{symbol}: {where}", file=sys.stderr)
