"""``pipeline demo``: the bundled recording replayed at a pace into a running Spark job, watched live.

    local stack up -> fresh demo database, topic, checkpoint -> `pipeline process` (a child) -> replay (a thread)
    -> live view: per symbol the minute forming and the minutes turned final -> all final -> stop -> table + chart

The demo only ever uses the local stack, and in it only its own database (``pipeline_demo``), topic
(``demo.aggtrades``) and checkpoint, all three emptied at the start of every run: it shows exactly its own rows,
whatever earlier runs left behind and whatever ``PIPELINE_KAFKA_BOOTSTRAP`` / ``PIPELINE_MYSQL_URL`` point at.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.commands import signals
from pipeline.commands.context import Context
from pipeline.core import times
from pipeline.core.trades import Trade, invalid_reason
from pipeline.core.windows import StoredWindow
from pipeline.errors import ConfigError, ServiceError
from pipeline.settings import DEFAULT_SYMBOLS, KafkaSecurity, Settings

if TYPE_CHECKING:
    from pipeline.services.procs import Child

DATABASE = "pipeline_demo"
TOPIC = "demo.aggtrades"
DEFAULT_SPEED = "10x"  # the 21 recorded minutes in about two minutes
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cassettes"


def bundled_cassettes() -> list[Path]:
    sources = sorted(FIXTURES.glob("*.yaml"))
    if not sources:
        raise ConfigError(f"no bundled cassettes in {FIXTURES}: run the demo from a clone of the repository")
    return sources


@dataclasses.dataclass
class Watch:
    """What the live view shows besides the rows: replay progress and the job's state."""

    total_trades: int
    first_ms: int
    last_ms: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    sent_ms: int | None = None  # event time of the newest item handed to Kafka
    replay_done: bool = False
    replay_error: str | None = None
    first_rows_s: float | None = None

    def tap(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield item
            self.sent_ms = getattr(item, "event_time_ms", None) or getattr(item, "complete_before_ms", self.sent_ms)


def _hhmm(ms: int | None) -> str:
    return "--:--:--" if ms is None else times.utc(ms).strftime("%H:%M:%S")


def view(rows: Sequence[StoredWindow], watch: Watch, published: int, job_state: str) -> Any:
    """The live screen: one line per symbol (the minute forming: last price, trades, VWAP; minutes final) under
    a progress line. Pure: rows and counters in, a rich renderable out."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    elapsed = time.monotonic() - watch.started
    span = max(watch.last_ms - watch.first_ms, 1)
    done = 0.0 if watch.sent_ms is None else min(max((watch.sent_ms - watch.first_ms) / span, 0.0), 1.0)
    head = Text.assemble(
        ("pipeline demo ", "bold"), f"{elapsed:5.1f}s   replay at event time {_hhmm(watch.sent_ms)} UTC ",
        f"({published:,} of {watch.total_trades:,} trades in Kafka)   job: ", (job_state, "cyan"))
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for column, justify in (("symbol", "left"), ("minute forming", "left"), ("last price", "right"),
                            ("trades", "right"), ("VWAP", "right"), ("minutes final", "right"),
                            ("newest final", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    symbols = sorted({r.symbol for r in rows})
    for symbol in symbols:
        mine = [r for r in rows if r.symbol == symbol]
        open_rows = [r for r in mine if not r.is_final]
        final_rows = [r for r in mine if r.is_final]
        forming = max(open_rows, key=lambda r: r.start_time) if open_rows else None
        newest_final = max(final_rows, key=lambda r: r.start_time) if final_rows else None
        places = 2 if mine[-1].close_price >= 100 else 4
        table.add_row(
            symbol,
            forming.start_time.strftime("%H:%M") + " (open)" if forming else "-",
            f"{forming.close_price:,.{places}f}" if forming else "-",
            f"{forming.trade_count:,}" if forming else "-",
            f"{forming.vwap:,.{places + 2}f}" if forming else "-",
            f"{len(final_rows)}",
            newest_final.start_time.strftime("%H:%M") + " final" if newest_final else "-",
        )
    if not symbols:
        table.add_row("(no rows yet: the Spark job is starting)", "", "", "", "", "", "")
    return Group(head, ProgressBar(total=1.0, completed=done, width=60), table)


class Demo:
    """One run: its settings (the local stack's services, the demo's names), its child job and replay thread."""

    def __init__(self, ctx: Context, speed: str, out_dir: Path, step: Callable[[str], None] | None = None) -> None:
        from pipeline import producer

        self.speed = producer.parse_speed(speed)
        self.speed_text = speed
        self.out_dir = out_dir
        self.ctx = ctx
        self.step = step or (lambda text: print(text, file=sys.stderr, flush=True))
        self.stop = threading.Event()
        self.job: Child | None = None
        self.settings: Settings | None = None

    # ------------------------------------------------------------------------------------------------ set-up

    def start_stack(self) -> Settings:
        """The local stack (started if needed), never the services the environment points at."""
        from pipeline.services import provision

        if self.ctx.stack().external() is not None:
            self.step("    PIPELINE_KAFKA_BOOTSTRAP / PIPELINE_MYSQL_URL are set: the demo leaves those services "
                      "alone and uses the local stack")
        # Spark too runs here: executors elsewhere (PIPELINE_SPARK_MASTER) could not reach the local stack.
        local = self.ctx.derive(dataclasses.replace(
            self.ctx.settings, kafka_bootstrap=None, mysql_url=None, mysql_admin_url=None, mysql_read_url=None,
            kafka_security=KafkaSecurity(), checkpoint_dir=None, spark_master=None))
        provision.ensure(self.step)  # a fresh Debian machine lacks the MySQL server (and maybe Java or Maven)
        conns, _ = local.stack().up()
        if conns.mysql_admin_url is None:
            raise ServiceError("the local stack has no schema-owner account; recreate it with `pipeline stack down` "
                               "and `pipeline stack up`")
        reader = conns.mysql_read_url or conns.mysql_url
        self.settings = dataclasses.replace(
            local.settings, symbols=DEFAULT_SYMBOLS, topic=TOPIC, kafka_bootstrap=conns.kafka_bootstrap,
            mysql_url=conns.mysql_url.with_database(DATABASE),
            mysql_admin_url=conns.mysql_admin_url.with_database(DATABASE),
            mysql_read_url=reader.with_database(DATABASE),
            checkpoint_dir=local.checkpoint("demo-checkpoint"))
        self.step(f"    kafka {conns.kafka_bootstrap}, mysql {self.settings.mysql_url}")
        return self.settings

    def reset(self) -> None:
        """Empty the demo's database, topic and checkpoint: each run starts from nothing."""
        from pipeline.adapters import kafka_io
        from pipeline.adapters.mysql import admin

        demo = self._settings()
        assert demo.mysql_admin_url is not None and demo.kafka_bootstrap is not None
        admin.fresh_database(demo.mysql_admin_url, DATABASE)
        kafka_io.delete_topics(demo.kafka_bootstrap, [TOPIC])
        kafka_io.ensure_topic(demo.kafka_bootstrap, TOPIC, demo.topic_partitions)
        if isinstance(demo.checkpoint_dir, Path):
            shutil.rmtree(demo.checkpoint_dir, ignore_errors=True)

    def _settings(self) -> Settings:
        if self.settings is None:
            raise RuntimeError("start_stack first")
        return self.settings

    # ------------------------------------------------------------------------------------------------ running

    def start_job(self) -> Path:
        """``pipeline process`` as a child process on the demo's settings; its log goes to a file."""
        from pipeline.services.procs import Child

        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = self.out_dir / "demo-processor.log"
        # In its own session: Ctrl-C reaches the demo, which stops it.
        self.job = Child([sys.executable, "-m", "pipeline", "process", "--trigger-seconds", "0.5"], log,
                         env=self._settings().child_environment(os.environ), name="pipeline process")
        return log

    def start_replay(self, items: list[Any], lowest: dict[str, int], watch: Watch, counters: Any) -> threading.Thread:
        from pipeline.commands.replay import publish

        def run() -> None:
            try:
                publish(self.ctx.derive(self._settings()), TOPIC, watch.tap(items), lowest, counters, self.speed,
                        self.stop.is_set)
            except Exception as exc:  # noqa: BLE001 - shown on the screen and ends the demo with an error
                watch.replay_error = f"{type(exc).__name__}: {exc}"
            finally:
                watch.replay_done = True

        thread = threading.Thread(target=run, name="demo-replay", daemon=True)
        thread.start()
        return thread

    def stop_job(self) -> None:
        """SIGTERM (the job finishes its batch and exits), SIGKILL after 60 s; then whatever else its process group
        still runs (mvn on a first start). Nothing it started outlives the demo, whatever interrupts this."""
        if self.job is None:
            return
        try:
            self.job.stop(timeout_s=60)
        finally:
            self.job.kill()


NO_ROWS_S = 240.0  # the job has written nothing this long after it started: something is wrong (see its log)
AFTER_REPLAY_S = 180.0  # the replay ended this long ago and windows are still missing or open


def _watch_until_final(demo: Demo, watch: Watch, counters: Any, reader: Any, expected: int, console: Any,
                       step: Callable[[str], None]) -> list[StoredWindow]:
    """Show the rows as they form until every window the replay fills is in MySQL and final (or the job stops,
    or nothing moves within the deadlines); returns the last rows read."""
    from rich.live import Live

    from pipeline.adapters.mysql import reads

    rows: list[StoredWindow] = []
    last_line, job_started = 0.0, time.monotonic()
    replay_ended: float | None = None
    # On a terminal the live view; elsewhere (a log, CI) a progress line every 10 s.
    live_view = Live(view(rows, watch, 0, "starting"), console=console, refresh_per_second=4)
    with live_view if console.is_terminal else contextlib.nullcontext() as live:
        while True:
            time.sleep(0.5)
            try:
                rows = reads.read_windows(reader)
            except Exception:  # noqa: BLE001 - the schema exists; a hiccup: read again next time
                pass
            now = time.monotonic()
            if rows and watch.first_rows_s is None:
                watch.first_rows_s = now - watch.started
            job_alive = demo.job is not None and demo.job.running()
            state = ("running" if rows else "starting") if job_alive else "stopped"
            if live is not None:
                live.update(view(rows, watch, counters.published, state))
            if not console.is_terminal and now - last_line > 10:
                last_line = now
                step(f"    replay at {_hhmm(watch.sent_ms)} UTC, {counters.published:,} trades in Kafka, "
                     f"{len(rows)} windows in MySQL, {sum(1 for r in rows if r.is_final)} final")
            if watch.replay_done and replay_ended is None:
                replay_ended = now
            complete = len(rows) == expected and all(r.is_final for r in rows)
            if complete or watch.replay_error or not job_alive:
                return rows
            if not rows and now - job_started > NO_ROWS_S:
                return rows
            if replay_ended is not None and now - replay_ended > AFTER_REPLAY_S:
                return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start the stack; replay the bundled recording into the running Spark job and "
                                    "watch minutes form live; show the result")
    p.add_argument("--speed", default=DEFAULT_SPEED, help="replay pace (default 10x: the 21 recorded minutes in "
                                                           "about two minutes; max: as fast as possible)")
    p.add_argument("--out-dir", default="out", help="where the PNG and HTML go (default: ./out)")
    p.set_defaults(func=lambda args, ctx: run(ctx, args.speed, Path(args.out_dir)))


@dataclasses.dataclass
class Replayed:
    """The bundled recording, opened: what is published, and what the job must make of it."""

    items: list[Any]
    lowest: dict[str, int]
    counters: Any
    expected: int  # the windows the replay fills
    symbols: int
    watch: Watch


def _open(sources: list[Path], watermark_s: int, started: float) -> Replayed:
    from pipeline import producer, replay
    from pipeline.core.counters import Counters

    counters = Counters()
    opened, lowest = replay.open_sources(sources, counters, watermark_s * 1000)
    items = list(producer.merge_by_time(opened))
    trades = [i for i in items if isinstance(i, Trade) and invalid_reason(i) is None]
    event_times = [t.event_time_ms for t in trades]
    watch = Watch(total_trades=len(trades), first_ms=min(event_times), last_ms=max(event_times), started=started)
    return Replayed(items, lowest, counters, len({(t.symbol, t.event_time_ms // 60_000) for t in trades}),
                    len({t.symbol for t in trades}), watch)


def run(ctx: Context, speed: str, out_dir: Path) -> int:
    """The whole demo; Ctrl-C stops everything it started and exits 0."""
    from rich.console import Console

    started = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {text}", file=sys.stderr, flush=True)

    sources = bundled_cassettes()
    demo = Demo(ctx, speed, out_dir, step)
    signals.interrupt_on_termination()
    thread: threading.Thread | None = None
    rows: list[StoredWindow] = []
    replayed: Replayed | None = None
    interrupted = False
    try:
        step("1/4 starting Kafka and MySQL (first run downloads Kafka from Maven Central)")
        mine = demo.start_stack()
        demo.reset()
        replayed = _open(sources, mine.watermark_seconds, started)
        watch = replayed.watch
        step(f"2/4 the Spark job starts (about 15 s) while {watch.total_trades:,} recorded trades of "
             f"{replayed.symbols} symbols ({_hhmm(watch.first_ms)} to {_hhmm(watch.last_ms)} UTC) replay at {speed}")
        log = demo.start_job()
        thread = demo.start_replay(replayed.items, replayed.lowest, watch, replayed.counters)
        reader = mine.read_url()
        assert reader is not None
        rows = _watch_until_final(demo, watch, replayed.counters, reader, replayed.expected, Console(stderr=True),
                                  step)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        demo.stop.set()
        if interrupted:
            step("interrupted: stopping the replay and the Spark job")
        demo.stop_job()
        if thread is not None:
            thread.join(timeout=30)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted or replayed is None:
        step("stopped; the local stack keeps running (`pipeline stack down` stops it)")
        return 0
    return _result(demo, replayed, rows, log, started, step)


def _result(demo: Demo, replayed: Replayed, rows: list[StoredWindow], log: Path, started: float,
            step: Callable[[str], None]) -> int:
    from pipeline import report

    watch, expected = replayed.watch, replayed.expected
    if watch.replay_error:
        raise ServiceError(f"demo: the replay failed: {watch.replay_error}")
    if len(rows) != expected or not all(r.is_final for r in rows):
        final = sum(1 for r in rows if r.is_final)
        raise ServiceError(f"demo: the Spark job stopped with {final} of {expected} windows final; its log: {log}")
    step(f"3/4 every minute final: first live rows after {watch.first_rows_s or 0:.1f} s, all {len(rows)} windows "
         f"final after {time.monotonic() - started:.1f} s; the Spark job stopped")
    step("4/4 the result")
    print(report.table(rows))
    png, page = report.write_charts(rows, demo.out_dir)
    print(f"\nchart: {png.resolve()}\npage:  {page.resolve()}")
    reader = demo.settings.read_url() if demo.settings else None
    assert reader is not None
    print(f"""
Look at the rows yourself (the demo's own database, {DATABASE}, emptied at each run):
  mariadb -h {reader.host} -P {reader.port} -u {reader.user} -p {DATABASE}
  (a read-only account; its password is in `pipeline stack env`, PIPELINE_MYSQL_READ_URL), then:
  SELECT * FROM moving_averages ORDER BY start_time DESC;
Stop everything with:
  pipeline stack down""")
    step("done")
    return 0
