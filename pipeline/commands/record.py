"""``pipeline record --out FILE --minutes N``: record live Binance answers into a cassette, with the 1m klines of
every minute recorded complete (so ``pipeline reconcile --cassette`` can prove a replay of it offline)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.commands import args as checks
from pipeline.commands import signals
from pipeline.commands.context import Context
from pipeline.core.counters import Counters


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record live Binance answers into a cassette")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--base-url", default=checks.EXCHANGE, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline import poller
    from pipeline.adapters import cassettes
    from pipeline.commands.reconcile import fetch_klines
    from pipeline.core.messages import Heartbeat

    checks.positive(args.minutes, "--minutes")
    stopping = signals.stop_event()
    deadline = time.monotonic() + args.minutes * 60

    def stop() -> bool:
        return stopping.is_set() or time.monotonic() > deadline

    wait = signals.interruptible(stopping)

    def sleep(seconds: float) -> None:  # the poller's backoff or a ban's wait ends at a signal, or at the deadline
        wait(min(seconds, max(0.0, deadline - time.monotonic())))

    settings, counters = ctx.settings, Counters()
    client = ctx.exchange(args.base_url, sleep=wait)
    states = poller.start_states(settings.symbols, {}, checks.now_ms())
    seen = minutes = 0
    with cassettes.recording(Path(args.out)):
        for item in poller.poll(client, states, counters, lag_ms=settings.watermark_seconds * 1000, sleep=sleep,
                                stop=stop):
            seen += 0 if isinstance(item, Heartbeat) else 1
        for state in states.values():
            first, last = state.covered_from_ms, state.complete_before_ms - state.complete_before_ms % 60_000
            if last > first:
                minutes += len(fetch_klines(client, state.symbol, first, last))
    print(f"record: {client.requests_sent} requests, {seen} trades and {minutes} minutes of klines recorded "
          f"into {args.out}")
    return 0
