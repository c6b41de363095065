"""The ``pipeline`` command line: the composition root. Parses arguments, builds settings and adapters, runs.

Every ``PipelineError`` becomes one line on stderr and its exit code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from pipeline import compose
from pipeline.core.counters import Counters
from pipeline.core.trades import MIN_TIME_MS
from pipeline.errors import ConfigError, PipelineError, run_command
from pipeline.settings import DEFAULT_TRIGGER_SECONDS, Settings, max_offsets

if TYPE_CHECKING:  # adapters are imported where used: `pipeline --help` must not load Kafka or Spark
    from datetime import datetime

    from pipeline.core.messages import ResumePoint
    from pipeline.services.stack import Connections


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.services import stack

    if args.action == "up":
        print("starting Kafka and MySQL (first run downloads Kafka from Maven Central)...", file=sys.stderr)
        conns, started = stack.up(settings)
        if conns.backend == "external":
            print("PIPELINE_KAFKA_BOOTSTRAP and PIPELINE_MYSQL_URL are set: using those services, nothing started")
            return 0
        verb = "started" if started else "already running"
        print(f"stack {verb} ({conns.backend}): kafka {conns.kafka_bootstrap}, mysql {conns.mysql_url}")
        print('load its settings into a shell with: eval "$(pipeline stack env)"')
        return 0
    if args.action == "down":
        print("stack stopped" if stack.down(settings) else "no local stack was running")
        return 0
    if args.action == "env":
        print(env_lines(stack.connections(settings)), end="")
        return 0
    backend, services = stack.status(settings)
    if backend == "none":
        print("stack: not running (start it with `pipeline stack up`)")
        return 1
    print(f"stack: {backend}")
    for s in services:
        print(f"  {s.name}: {'up' if s.ok else 'DOWN'} - {s.detail}")
    return 0 if all(s.ok for s in services) else 1


def env_lines(conns: Connections) -> str:
    """``NAME=value`` lines a shell can ``eval`` or ``source``, every value shell-quoted, then one ``export``."""
    values = {
        "PIPELINE_KAFKA_BOOTSTRAP": conns.kafka_bootstrap,
        "PIPELINE_MYSQL_URL": conns.mysql_url.render(),
        "PIPELINE_MYSQL_ADMIN_URL": conns.mysql_admin_url.render() if conns.mysql_admin_url else None,
        "PIPELINE_MYSQL_READ_URL": (conns.mysql_read_url or conns.mysql_url).render(),
    }
    known = {name: value for name, value in values.items() if value is not None}
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in known.items()) + f"export {' '.join(known)}\n"


def _stop_flag() -> Callable[[], bool]:
    """SIGINT/SIGTERM ask the loop to stop after the current step; it then flushes and exits cleanly."""
    return _stop_event().is_set


def _stop_event() -> threading.Event:
    """The stop flag as an event: ``wait`` is a sleep that a signal cuts short (a ban's wait can be hours)."""
    stopping = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        print(f"pipeline: {signal.Signals(signum).name} received, flushing and stopping", file=sys.stderr)
        stopping.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stopping


def _interruptible(stopping: threading.Event) -> Callable[[float], None]:
    """A ``sleep`` for the client and the poller that ends as soon as ``stopping`` is set (by a signal)."""

    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    return sleep


def _parse_time_ms(raw: str) -> int:
    from datetime import UTC, datetime

    if raw.isdigit():
        return _checked_time_ms(int(raw), raw)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--start must be epoch ms or an ISO time like 2026-01-31T12:00:00Z, got {raw!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _checked_time_ms(int(parsed.timestamp() * 1000), raw)


def _checked_time_ms(ms: int, raw: str) -> int:
    import time

    if not MIN_TIME_MS <= ms <= time.time() * 1000 + 60_000:  # Binance began in 2017; not in the future
        raise ConfigError(f"--start must be a past time after 2017 in epoch ms or ISO form, got {raw!r}")
    return ms


LONGEST_WAIT_S = 86_400.0  # a day: far beyond any useful interval or timeout, and within what a wait can take


def _positive(value: float, option: str, most: float = math.inf) -> None:
    """Refuse ``value`` unless finite and in ``(0, most]``: nan would make a poll loop spin, inf overflow a wait."""
    if not (math.isfinite(value) and 0 < value <= most):
        limit = "" if math.isinf(most) else f" and at most {most:g}"
        raise ConfigError(f"{option} must be a number above 0{limit}, got {value}")


def _symbol(symbol: str) -> str:
    from pipeline.core.trades import is_symbol

    if not is_symbol(symbol):
        raise ConfigError(f"--symbol {symbol!r} is not a Binance symbol (2 to 20 of A-Z and 0-9, one per --symbol)")
    return symbol


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from pipeline import poller, producer
    from pipeline.adapters import kafka_io
    from pipeline.adapters.binance import BinanceClient, make_session
    from pipeline.core.trades import Sequencer
    from pipeline.errors import ExchangeError

    _positive(args.poll_interval, "--poll-interval", LONGEST_WAIT_S)
    _positive(args.request_timeout, "--request-timeout", LONGEST_WAIT_S)
    _positive(args.weight_budget, "--weight-budget", 6000)  # Binance's limit per minute
    start_ms = _parse_time_ms(args.start) if args.start else int(time.time() * 1000)
    stopping = _stop_event()
    stop, sleep = stopping.is_set, _interruptible(stopping)
    bootstrap, sink = compose.trade_sink(settings)
    counters = Counters()
    client = BinanceClient(session=make_session(), base_url=args.base_url, weight_budget=args.weight_budget,
                           timeout_s=(5.0, args.request_timeout), sleep=sleep)
    try:
        resume = _found(kafka_io.resume_points(bootstrap, settings.topic, settings.symbols,
                                               options=settings.kafka_client_options()))
        missing = [s for s in settings.symbols if s not in resume]
        problems = poller.check_resume(client, resume, args.max_catch_up_ids, counters, sleep, stop)
        if problems or missing:  # the tail may hold a replay, or bury a quiet symbol: read the whole topic
            print(f"produce: {'; '.join(problems.values()) or ', '.join(missing) + ' not in the topic tail'}; "
                  "scanning the whole topic", file=sys.stderr)
            resume = _found(kafka_io.resume_points(bootstrap, settings.topic, settings.symbols, max_scan=None,
                                                   options=settings.kafka_client_options()))
            problems = poller.check_resume(client, resume, args.max_catch_up_ids, counters, sleep, stop)
        if problems:
            raise ConfigError("; ".join(problems.values()) + f" (topic {settings.topic}: produce into a fresh "
                              "PIPELINE_TOPIC, or raise --max-catch-up-ids to walk the history)")
    except ExchangeError as exc:
        sink.close()
        raise ConfigError(f"{exc} (check PIPELINE_SYMBOLS)") from exc
    except PipelineError:
        sink.close()
        raise
    states = poller.start_states(settings.symbols, resume, start_ms)
    for symbol, state in states.items():
        point = resume.get(symbol)
        if point is None:
            where = f"starting at {_iso(state.covered_from_ms)} (the start of the start point's minute)"
        elif point.last_agg_id is None:
            where = f"resuming at {_iso(state.covered_from_ms)} (the newest coverage in Kafka; trades located by time)"
        else:
            continue  # said by _found
        print(f"{symbol}: {where}", file=sys.stderr)
    progress = producer.Progress(counters, detail=lambda: poller.lag_report(states.values(), int(time.time() * 1000)),
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


def _found(resume: dict[str, ResumePoint]) -> dict[str, ResumePoint]:
    for symbol, point in resume.items():
        if point.last_agg_id is not None:
            print(f"{symbol}: resuming after agg id {point.last_agg_id} (already in Kafka)", file=sys.stderr)
    return resume


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from pipeline import producer, replay

    speed = producer.parse_speed(args.speed)
    counters = Counters()
    sources, lowest = replay.open_sources([Path(p) for p in args.source], counters,
                                          settings.watermark_seconds * 1000)
    stop = _stop_flag()
    progress = producer.Progress(counters)
    replay.publish_items(settings, producer.merge_by_time(sources), lowest, counters, speed=speed, stop=stop,
                         progress=progress)
    elapsed = progress.done()
    print(f"replay: {counters.summary()} in {elapsed:.1f}s ({counters.published / max(elapsed, 1e-9):,.0f} trades/s)")
    return 0 if not stop() else 130


def _record(args: argparse.Namespace, settings: Settings) -> int:
    import time
    from pathlib import Path

    from pipeline import poller, reconcile
    from pipeline.adapters import cassettes
    from pipeline.adapters.binance import BinanceClient, make_session
    from pipeline.core.messages import Heartbeat

    _positive(args.minutes, "--minutes")
    stopping = _stop_event()
    deadline = time.monotonic() + args.minutes * 60

    def stop() -> bool:
        return stopping.is_set() or time.monotonic() > deadline

    wait = _interruptible(stopping)

    def sleep(seconds: float) -> None:  # the poller's backoff or a ban's wait ends at a signal, or at the deadline
        wait(min(seconds, max(0.0, deadline - time.monotonic())))

    counters = Counters()
    client = BinanceClient(session=make_session(), base_url=args.base_url, sleep=wait)
    states = poller.start_states(settings.symbols, {}, int(time.time() * 1000))
    seen = 0
    minutes = 0
    with cassettes.recording(Path(args.out)):
        for item in poller.poll(client, states, counters, lag_ms=settings.watermark_seconds * 1000, sleep=sleep,
                                stop=stop):
            seen += 0 if isinstance(item, Heartbeat) else 1
        # The exchange's 1m klines of every minute recorded complete, so `pipeline reconcile --cassette` can
        # prove a replay of this recording with no network.
        for state in states.values():
            first, last = state.covered_from_ms, state.complete_before_ms - state.complete_before_ms % 60_000
            if last > first:
                minutes += len(reconcile.fetch_klines(client, state.symbol, first, last))
    print(f"record: {client.requests_sent} requests, {seen} trades and {minutes} minutes of klines recorded "
          f"into {args.out}")
    return 0


def _process(args: argparse.Namespace, settings: Settings) -> int:
    _positive(args.trigger_seconds, "--trigger-seconds", LONGEST_WAIT_S)
    if args.max_offsets_per_trigger is not None:
        settings = dataclasses.replace(settings, max_offsets_per_trigger=max_offsets(
            args.max_offsets_per_trigger.strip(), "--max-offsets-per-trigger"))
    summary = compose.process(settings, until_idle=args.until_idle, trigger_seconds=args.trigger_seconds)
    print(f"process: {summary.line()}")
    return 0


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.mysql import migrations
    from pipeline.services import stack

    admin = stack.mysql_admin_url(settings)
    url = admin or stack.mysql_url(settings)
    before = migrations.schema_version(url)
    version = migrations.migrate_schema(url, "PIPELINE_MYSQL_ADMIN_URL" if admin else "PIPELINE_MYSQL_URL")
    change = "already current" if before == version else f"migrated from version {before}"
    print(f"migrate: schema at version {version} ({change}) in {url}")
    return 0


def _utc_time(raw: str | None, option: str) -> datetime | None:
    """An ISO time (``2026-01-01T12:00``, ``2026-01-01 12:00Z``, a date) as a naive UTC datetime, like the table's."""
    from datetime import UTC, datetime

    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{option} must be an ISO time like 2026-01-01T12:00 (UTC), got {raw!r}") from exc
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _show(settings: Settings, symbol: str | None, minutes: int | None, out_dir: str,
          since: datetime | None = None, until: datetime | None = None) -> int:
    from pathlib import Path

    from pipeline import report
    from pipeline.adapters.mysql import reads
    from pipeline.services import stack

    # The read-only account (PIPELINE_MYSQL_READ_URL, else the writer's): a report never needs to write.
    rows = report.select(reads.read_windows(stack.mysql_read_url(settings), symbol), symbol, minutes,
                         since, until)
    print(report.table(rows))
    if not rows:
        return 1
    png, page = report.write_charts(rows, Path(out_dir))
    print(f"\nchart: {png.resolve()}\npage:  {page.resolve()}")
    return 0


def _report(args: argparse.Namespace, settings: Settings) -> int:
    since, until = _utc_time(args.since, "--since"), _utc_time(args.until, "--until")
    if since and until and since >= until:
        raise ConfigError("--since must be before --until")
    if args.minutes is not None and args.minutes < 1:
        raise ConfigError("--minutes must be at least 1")
    return _show(settings, args.symbol, args.minutes, args.out_dir, since, until)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipeline import status

    _positive(args.stalled_after, "--stalled-after")
    report = status.gather(settings, args.stalled_after)
    print(json.dumps(report, indent=2, default=str) if args.json else status.render(report))
    return 0 if report.get("ok") else 1


def _utc_text(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from pipeline import backfill

    def announce(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    by_time = args.start is not None or args.until is not None or args.symbol
    if not args.source and not by_time:
        raise ConfigError("give --source PATH, or --symbol S with --from and --until (ISO UTC)")
    counters = Counters()
    fetched = []
    if by_time:
        import time
        from datetime import UTC

        from pipeline.adapters.binance import BinanceClient, make_session

        since, until = _utc_time(args.start, "--from"), _utc_time(args.until, "--until")
        if since is None or until is None or not args.symbol:
            raise ConfigError("fetching by time needs --symbol, --from and --until")
        symbols = [_symbol(s) for s in dict.fromkeys(s.upper() for s in args.symbol)]
        from_ms, until_ms = (int(t.replace(tzinfo=UTC).timestamp() * 1000) for t in (since, until))
        settled_ms = int(time.time() * 1000) - settings.watermark_seconds * 1000
        if not MIN_TIME_MS <= from_ms < until_ms <= settled_ms:
            raise ConfigError("--from must be before --until, after 2017, and --until at least "
                              f"PIPELINE_WATERMARK_SECONDS ({settings.watermark_seconds} s) in the past")
        client = BinanceClient(session=make_session(), base_url=args.base_url)
        for symbol in symbols:
            items, first = backfill.exchange_trades(client, symbol, from_ms, until_ms, counters)
            fetched.append((items, {symbol: first} if first is not None else {}))
            announce(f"backfill: {symbol} from agg id {first} ({_utc_text(from_ms)} .. {_utc_text(until_ms)})")
    result = backfill.run(settings, [Path(p) for p in args.source or []], _stop_flag(), announce, fetched,
                          counters)
    if result.summary is None:
        return 130
    counts = result.summary.counts
    print(f"backfill: published {result.published} trades (invalid {result.invalid}, already in the topic "
          f"{result.duplicates}); {result.summary.line()}")
    if counts.late_trades:
        print(f"backfill: {counts.late_trades} trades belong to minutes already final: counted late, kept in "
              "quarantine, not applied; `pipeline reconcile --repair` rewrites such minutes from the exchange")
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    import time
    from datetime import UTC
    from pathlib import Path

    from pipeline import reconcile
    from pipeline.adapters import cassettes
    from pipeline.adapters.binance import BinanceClient, make_session
    from pipeline.core.reconcile import all_match
    from pipeline.core.windows import WINDOW_MS
    from pipeline.services import stack

    _symbol(args.symbol)
    cassette = Path(args.cassette) if args.cassette else None
    if cassette is not None:
        if args.minutes is not None or args.since is not None or args.until is not None:
            raise ConfigError("--cassette takes the range the recording holds klines for: no --since/--minutes")
        start_ms, end_ms = reconcile.recorded_range(cassette, args.symbol)
    elif (args.minutes is None) == (args.since is None):
        raise ConfigError("give --since (with --until, default now) or --minutes N (the last N whole minutes)")
    elif args.since is not None:
        since = _utc_time(args.since, "--since")
        until = _utc_time(args.until, "--until") if args.until else None
        assert since is not None
        start_ms = int(since.replace(tzinfo=UTC).timestamp() * 1000)
        end_ms = int(until.replace(tzinfo=UTC).timestamp() * 1000) if until else int(time.time() * 1000)
    else:
        if args.until is not None or not 1 <= args.minutes <= 100_000:
            raise ConfigError("--minutes takes 1 to 100000, without --until")
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - end_ms % WINDOW_MS - args.minutes * WINDOW_MS
    # Only settled minutes: trades reach Binance's REST up to PIPELINE_WATERMARK_SECONDS late, and the producer
    # declares a minute complete only after that (a younger minute would be judged before it could be final).
    if cassette is None:
        end_ms = min(end_ms, int(time.time() * 1000) - settings.watermark_seconds * 1000)
    start_ms -= start_ms % WINDOW_MS
    end_ms -= end_ms % WINDOW_MS  # whole minutes only
    if end_ms <= start_ms:
        raise ConfigError("the range holds no whole minute")
    client = BinanceClient(session=make_session(), base_url=args.base_url)
    if cassette is not None:
        if args.repair:
            raise ConfigError("--repair needs the exchange itself, not a recording")
        with cassettes.playback(cassette):
            minutes = reconcile.run(client, stack.mysql_read_url(settings), args.symbol, start_ms, end_ms)
    else:
        minutes = reconcile.run(client, stack.mysql_read_url(settings), args.symbol, start_ms, end_ms)
    show = reconcile.as_json if args.json else reconcile.as_text
    if not args.repair or all_match(minutes):
        print(show(args.symbol, start_ms, end_ms, minutes))
        return 0 if all_match(minutes) else 1
    if not args.json:
        print(show(args.symbol, start_ms, end_ms, minutes))
    from pipeline.adapters.mysql import migrations

    writer = stack.mysql_url(settings)
    migrations.ensure_schema(writer, stack.mysql_admin_url(settings))  # pipeline_repairs (schema 4)
    repaired = reconcile.repair(client, writer, minutes)
    after = reconcile.run(client, stack.mysql_read_url(settings), args.symbol, start_ms, end_ms)
    if args.json:  # one document: before, what was repaired, after
        import json

        print(json.dumps({"before": json.loads(show(args.symbol, start_ms, end_ms, minutes)),
                          "repaired": [{"start": reconcile.minute_text(m.start_ms), "status": m.status, "done": what}
                                       for m, what in repaired],
                          "after": json.loads(show(args.symbol, start_ms, end_ms, after))}, indent=2))
    else:
        for minute, what in repaired:
            print(f"repaired {reconcile.minute_text(minute.start_ms)} ({minute.status}): {what}")
        print(show(args.symbol, start_ms, end_ms, after))
    return 0 if all_match(after) else 1


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from pipeline import demo

    return demo.run(settings, args.speed, Path(args.out_dir))


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    from pathlib import Path

    from pipeline import bench

    parts = tuple(p.strip() for p in args.only.split(",")) if args.only else bench.PARTS
    if not set(parts) <= set(bench.PARTS):
        raise ConfigError(f"--only takes a comma-separated list of {', '.join(bench.PARTS)}, got {args.only!r}")
    base = bench.QUICK if args.quick else bench.FULL
    sizes = dataclasses.replace(base, **{k: v for k, v in (
        ("trades", args.trades), ("live_seconds", args.live_seconds), ("ledger_seconds", args.ledger_seconds),
        ("ledger_rows", args.ledger_rows), ("rate", args.rate), ("freshness_runs", args.freshness_runs))
        if v is not None})
    if args.spark_master:  # the processor runs and Spark's raw count are children: they read it from there
        settings = Settings.from_mapping({**settings.environment(), "PIPELINE_SPARK_MASTER": args.spark_master})
    return bench.main(bench.Options(sizes, args.quick, parts, Path(args.out) if args.out else None,
                                    args.partitions or settings.topic_partitions), settings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: what is wrong and where to read more."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_stack = sub.add_parser("stack", help="start, stop, inspect the local Kafka + MySQL")
    p_stack.add_argument("action", choices=["up", "down", "status", "env"])
    p_stack.set_defaults(func=_stack)

    p_produce = sub.add_parser("produce", help="poll Binance and publish trades to Kafka, forever")
    p_produce.add_argument("--mode", choices=["live"], required=True)
    p_produce.add_argument("--start", help="where a symbol without trades in Kafka begins (epoch ms or ISO time, "
                                           "rounded down to its minute); default: the current minute")
    p_produce.add_argument("--poll-interval", type=float, default=1.0,
                           help="seconds between requests for a symbol that is caught up")
    p_produce.add_argument("--weight-budget", type=int, default=3000, help="request weight per minute to stay under")
    p_produce.add_argument("--request-timeout", type=float, default=15.0, help="seconds to wait for an answer")
    p_produce.add_argument("--max-catch-up-ids", type=int, default=20_000_000,
                           help="refuse to resume further than this many agg ids behind Binance's newest")
    p_produce.add_argument("--base-url", default="https://api.binance.com", help=argparse.SUPPRESS)
    p_produce.set_defaults(func=_produce)

    p_replay = sub.add_parser("replay", help="publish cassettes or Binance archives to Kafka")
    p_replay.add_argument("--source", action="append", required=True,
                          help="a cassette (.yaml), an archive (<SYMBOL>-aggTrades-<date>.csv/.zip) or a directory "
                               "of them; repeatable")
    p_replay.add_argument("--speed", default="max", help="max (default), 1x, or Nx such as 60x")
    p_replay.set_defaults(func=_replay)

    p_process = sub.add_parser("process", help="the Spark job: Kafka -> 1-minute windows in MySQL")
    p_process.add_argument("--until-idle", action="store_true",
                           help="process everything available, finalize what can be, and exit 0")
    p_process.add_argument("--trigger-seconds", type=float, default=DEFAULT_TRIGGER_SECONDS,
                           help=f"micro-batch interval when running on (default {DEFAULT_TRIGGER_SECONDS:g})")
    p_process.add_argument("--max-offsets-per-trigger", metavar="N",
                           help="at most N Kafka messages per micro-batch (default PIPELINE_MAX_OFFSETS_PER_TRIGGER, "
                                "else 500000); lower it if a batch is too large for the driver")
    p_process.set_defaults(func=_process)

    p_migrate = sub.add_parser("migrate", help="create or update the MySQL schema (as PIPELINE_MYSQL_ADMIN_URL, "
                                               "else PIPELINE_MYSQL_URL)")
    p_migrate.set_defaults(func=_migrate)

    p_report = sub.add_parser("report", help="table and chart of what is in moving_averages")
    p_report.add_argument("--symbol", type=str.upper)
    p_report.add_argument("--since", help="first minute shown, ISO UTC (e.g. 2026-01-01T12:00); with neither "
                          "--since nor --until: the newest stretch of data (after the last gap of over an hour)")
    p_report.add_argument("--until", help="end of the range shown (exclusive), ISO UTC")
    p_report.add_argument("--minutes", type=int, help="only each symbol's latest N minutes (of the range)")
    p_report.add_argument("--out-dir", default="out", help="where the PNG and HTML go (default: ./out)")
    p_report.set_defaults(func=_report)

    p_status = sub.add_parser("status", help="is the pipeline healthy: services, the job's lag per partition, its "
                              "last batch, windows, late and quarantined trades, producers' coverage")
    p_status.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p_status.add_argument("--stalled-after", type=float, default=300.0, help="seconds an unread message may wait "
                          "before the job counts as stalled (default 300)")
    p_status.set_defaults(func=_status)

    p_demo = sub.add_parser("demo", help="start the stack; replay the bundled recording into the running Spark "
                            "job and watch minutes form live; show the result")
    p_demo.add_argument("--speed", default="10x", help="replay pace (default 10x: the 21 recorded minutes in about "
                        "two minutes; max: as fast as possible)")
    p_demo.add_argument("--out-dir", default="out", help="where the PNG and HTML go (default: ./out)")
    p_demo.set_defaults(func=_demo)

    p_backfill = sub.add_parser("backfill", help="compute the windows of archives or cassettes the stream never "
                                "saw, with the same Spark job as a batch, into the same tables (never counting a "
                                "trade twice, never changing a final minute)")
    p_backfill.add_argument("--source", action="append", help="archive, cassette or directory (repeatable); every "
                            "source is checked before anything is written")
    p_backfill.add_argument("--symbol", action="append", help="fetch this symbol's aggTrades from Binance by time "
                            "(repeatable; with --from and --until)")
    p_backfill.add_argument("--from", dest="start", help="first instant fetched, ISO UTC (e.g. 2026-01-01T00:00)")
    p_backfill.add_argument("--until", help="end of the fetched range (exclusive), ISO UTC; settled: at least "
                            "PIPELINE_WATERMARK_SECONDS in the past")
    p_backfill.add_argument("--base-url", default="https://api.binance.com", help=argparse.SUPPRESS)
    p_backfill.set_defaults(func=_backfill)

    p_reconcile = sub.add_parser("reconcile", help="compare each final window with Binance's 1m klines; exit 0 "
                                 "only when every final minute matches")
    p_reconcile.add_argument("--symbol", type=str.upper, required=True)
    p_reconcile.add_argument("--since", help="first minute, ISO UTC (e.g. 2026-01-01T12:00)")
    p_reconcile.add_argument("--until", help="end of the range (exclusive), ISO UTC (default: now)")
    p_reconcile.add_argument("--minutes", type=int, help="the last N whole minutes")
    p_reconcile.add_argument("--json", action="store_true", help="the report as JSON")
    p_reconcile.add_argument("--cassette", help="take the klines from a recording (`pipeline record` keeps them), "
                             "for the range it holds: no network")
    p_reconcile.add_argument("--repair", action="store_true", help="rewrite each minute that does not match from "
                             "the exchange's aggTrades (reference aggregator, one transaction each, recorded in "
                             "pipeline_repairs), then compare again")
    p_reconcile.add_argument("--base-url", default="https://api.binance.com", help=argparse.SUPPRESS)
    p_reconcile.set_defaults(func=_reconcile)

    p_record = sub.add_parser("record", help="record live Binance answers into a cassette")
    p_record.add_argument("--out", required=True)
    p_record.add_argument("--minutes", type=float, required=True)
    p_record.add_argument("--base-url", default="https://api.binance.com", help=argparse.SUPPRESS)
    p_record.set_defaults(func=_record)

    p_bench = sub.add_parser("bench", help="measure throughput, freshness and memory side by side with Spark and "
                                           "kafka-python alone; print a table and write JSON")
    p_bench.add_argument("--quick", action="store_true", help="small sizes (50,000 trades, 20 s of live pace): a "
                                                              "smoke test")
    p_bench.add_argument("--out", help="the JSON report (default: ./bench/bench-<UTC time>.json)")
    p_bench.add_argument("--trades", type=int, help="trades on the pre-loaded topic (default 1,000,000)")
    p_bench.add_argument("--live-seconds", type=float, help="freshness run at live pace (default 120)")
    p_bench.add_argument("--freshness-runs", type=int, help="how many times the freshness run is repeated; the "
                                                            "worst is shown (default 3; --quick 1)")
    p_bench.add_argument("--rate", type=int, help="live pace in trades/s over the 5 symbols (default 500)")
    p_bench.add_argument("--ledger-rows", type=int, help="ledger rows for the batch-time comparison (default 43,200)")
    p_bench.add_argument("--ledger-seconds", type=float, help="each live run of the ledger comparison (default 45)")
    p_bench.add_argument("--only", help="some of: processor,replay,outage,freshness,ledger (default: all)")
    p_bench.add_argument("--spark-master", help="run the processor and Spark's raw read on this master, e.g. "
                         "spark://host:7077 (default: PIPELINE_SPARK_MASTER, else local[2]); executors' sizes come "
                         "from PYSPARK_SUBMIT_ARGS, e.g. '--executor-memory 512m pyspark-shell'")
    p_bench.add_argument("--partitions", type=int, help="partitions of each bench topic (default: as the pipeline "
                                                        "creates them)")
    p_bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: int(args.func(args, Settings.from_mapping(os.environ))), args.verbose)
