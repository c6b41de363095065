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
    freshness   ``pipeline process`` running (1 s trigger) while trades stamped "now" arrive at live pace, with
                per-symbol coverage heartbeats each second (``T`` = now - HEARTBEAT_LAG_S), flushed first as the live
                producer does. Producer ack -> the batch that holds the trade's offset is visible in
                ``pipeline_batches`` (committed together with its rows; polled every POLL_S); window end + lag ->
                ``is_final = 1`` visible. Also: ``pipeline process`` start -> its first committed batch.
    ledger      the same live pace on an empty ledger and on one holding a month of batches (synthetic
                ``pipeline_batches`` rows of the same run id: the checkpoint's query id is set beforehand):
                batch time p50/p95 from the checkpoint log, after the warm-up (the first quarter of the run, at
                most 30 s: a fresh JVM's first batches are slow; live figures are given with and without it).
    memory      peak RSS (``/proc``) of the processor's process tree (Python + the Spark driver JVM), of Kafka
                and of MySQL (the processes listening on their ports, when they run on this machine).

Each measurement gets its own topic, database (created and dropped by the schema owner) and checkpoint; topics are
deleted afterwards. Run as a module (``python -m pipeline.bench count TOPIC CHECKPOINT``) it is the counting Spark
session.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from pipeline.errors import ConfigError, PipelineError, ServiceError
from pipeline.settings import DEFAULT_TRIGGER_SECONDS, MysqlUrl, Settings

# Realistic skew: BTCUSDT trades about 50 times as often as ADAUSDT.
WEIGHTS = (("BTCUSDT", 50), ("ETHUSDT", 20), ("SOLUSDT", 12), ("BNBUSDT", 6), ("ADAUSDT", 1))
START_PRICE_E8 = {"BTCUSDT": 95_000_00000000, "ETHUSDT": 3_300_00000000, "SOLUSDT": 190_00000000,
                  "BNBUSDT": 700_00000000, "ADAUSDT": 90000000}
DAY = "2025-01-01"  # the generated archives' day: long past, so replay accepts them
DAY_MS = 86_400_000
MINUTE_MS = 60_000
HEARTBEAT_LAG_S = 1.0  # live runs: a heartbeat declares complete what is older than this
POLL_S = 0.025  # live runs: how often MySQL is read for newly committed batches and final rows
PARTS = ("processor", "replay", "outage", "freshness", "ledger")
QUERY_DIR = "stream"  # the job's checkpoint subdirectory (pipeline/spark/job.py)


@dataclasses.dataclass(frozen=True)
class Sizes:
    trades: int
    live_seconds: float
    ledger_seconds: float
    rate: int = 500
    ledger_rows: int = 43_200  # a month of batches, one a minute
    # long outages caught up by `pipeline process --until-idle`: (symbols, minutes) of live-mode traffic each
    outages: tuple[tuple[int, int], ...] = ((5, 120), (5, 1440), (20, 1440))
    freshness_runs: int = 3  # the live run is repeated; the table shows the worst
    floor_seconds: float = 30  # Spark's floor: a query that only counts, fed at the same pace


FULL = Sizes(trades=1_000_000, live_seconds=120, ledger_seconds=45)
QUICK = Sizes(trades=50_000, live_seconds=20, ledger_seconds=10, outages=((5, 120),), freshness_runs=1,
              floor_seconds=10)
LIVE_TRIGGER_S = DEFAULT_TRIGGER_SECONDS  # the live runs use `pipeline process` as it comes; the floor query too


# ---------------------------------------------------------------------------------------------------- display


class Progress:
    """``[  12.3s] what`` lines on stderr while the bench runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr, flush=True)


def every(seconds: float) -> Callable[[], bool]:
    """True once per ``seconds`` (for periodic progress lines inside loops)."""
    last = [time.monotonic()]

    def due() -> bool:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            return True
        return False

    return due


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def spread(values: Sequence[float], *qs: float) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {f"p{q:g}": _round(percentile(values, q)) for q in qs}
    out["max"] = _round(max(values)) if values else None
    out["n"] = len(values)
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Dataset:
    """N trades over one day in archive rows (per symbol) and as the Kafka messages replay would send (time order,
    then one heartbeat per symbol covering the day)."""

    trades: int
    rows: dict[str, list[str]]
    messages: list[tuple[bytes, bytes]]

    def write_archives(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for symbol, rows in self.rows.items():
            (directory / f"{symbol}-aggTrades-{DAY}.csv").write_text("\n".join(rows) + "\n")
        return directory


def _decimal_e8(value: int) -> str:
    return f"{value // 100_000_000}.{value % 100_000_000:08d}"


def generate(trades: int, seed: int = 11) -> Dataset:
    """Fast: strings built directly (no Decimal, no Trade objects); checked against the real codecs below."""
    from pipeline.core import messages

    rng = random.Random(seed)
    start_ms = int(datetime.fromisoformat(DAY).replace(tzinfo=UTC).timestamp() * 1000)
    total = sum(w for _, w in WEIGHTS)
    counts = {s: trades * w // total for s, w in WEIGHTS}
    counts[WEIGHTS[0][0]] += trades - sum(counts.values())
    rows: dict[str, list[str]] = {}
    timed: list[tuple[int, bytes, bytes]] = []
    for index, (symbol, _) in enumerate(WEIGHTS):
        n, key, price = counts[symbol], symbol.encode(), START_PRICE_E8[symbol]
        tick = max(1, price // 100_000)
        trade_id, agg_id = 1_000_000 * (index + 1), 100_000 * (index + 1)
        symbol_rows = rows[symbol] = []
        head = f'{{"v":1,"type":"trade","s":"{symbol}","a":'
        for i in range(n):
            t = start_ms + int((i + rng.random()) * DAY_MS / n)
            price = max(tick, price + tick * rng.randint(-3, 3))
            p, q = _decimal_e8(price), _decimal_e8(rng.randint(1, 200_000_000))
            last = trade_id + (0 if rng.random() < 0.7 else rng.randint(1, 4))
            maker = rng.random() < 0.5
            symbol_rows.append(f"{agg_id},{p},{q},{trade_id},{last},{t},{maker},True")
            timed.append((t, key, (f'{head}{agg_id},"p":"{p}","q":"{q}","f":{trade_id},"l":{last},"T":{t},'
                                   f'"m":{"true" if maker else "false"},"M":true}}').encode()))
            agg_id, trade_id = agg_id + 1, last + 1
    timed.sort(key=lambda m: m[0])
    encoded = [(k, v) for _, k, v in timed]
    encoded += [messages.encode_heartbeat(messages.Heartbeat(s, start_ms, start_ms + DAY_MS)) for s, _ in WEIGHTS]
    _check_codecs(rows, timed)
    return Dataset(trades, rows, encoded)


def _check_codecs(rows: dict[str, list[str]], timed: list[tuple[int, bytes, bytes]]) -> None:
    """The generated messages are byte for byte what the producer would send for the archive rows."""
    from pipeline.core import messages, trades

    firsts = {k: v for _, k, v in reversed(timed[:5000])}
    for symbol, symbol_rows in rows.items():
        trade = trades.parse_archive_row(symbol, symbol_rows[0].split(","))
        if symbol.encode() in firsts and messages.encode_trade(trade) != (symbol.encode(), firsts[symbol.encode()]):
            raise AssertionError(f"bench: generated message for {symbol} differs from encode_trade's")


# ---------------------------------------------------------------------------------------------------- services


@dataclasses.dataclass(frozen=True)
class Services:
    bootstrap: str
    writer: MysqlUrl
    admin: MysqlUrl
    reader: MysqlUrl
    settings: Settings
    backend: str

    def env(self, topic: str, database: str, checkpoint: Path, **extra: str) -> dict[str, str]:
        """The environment of a ``pipeline`` child: this measurement's topic, database (every account) and
        checkpoint; everything else (cache, Kafka security, PIPELINE_SPARK_MASTER, ...) as the bench's own."""
        env = dict(os.environ)
        if self.settings.spark_master:  # --spark-master
            env["PIPELINE_SPARK_MASTER"] = self.settings.spark_master
        env.update(PIPELINE_KAFKA_BOOTSTRAP=self.bootstrap, PIPELINE_TOPIC=topic,
                   PIPELINE_CHECKPOINT_DIR=str(checkpoint),
                   PIPELINE_MYSQL_URL=self.writer.with_database(database).render(),
                   PIPELINE_MYSQL_ADMIN_URL=self.admin.with_database(database).render(),
                   PIPELINE_MYSQL_READ_URL=self.reader.with_database(database).render(), **extra)
        return env


def connect_services(settings: Settings, progress: Progress) -> Services:
    """The services in the environment, else the local stack (started if it is not running, and left running)."""
    from pipeline.services import stack

    if stack.external(settings) is None:
        progress("starting (or finding) the local stack: Kafka and MySQL")
    conns, started = stack.up(settings)
    if started:
        progress("local stack started; it stays up (stop it with `pipeline stack down`)")
    settings = settings.with_connections(conns.kafka_bootstrap, conns.mysql_url, conns.mysql_admin_url,
                                         conns.mysql_read_url)
    assert settings.kafka_bootstrap and settings.mysql_url
    return Services(settings.kafka_bootstrap, settings.mysql_url, settings.mysql_admin_url or settings.mysql_url,
                    settings.read_url() or settings.mysql_url, settings, conns.backend)


class Resources:
    """Topics and databases made for one measurement, removed at the end."""

    def __init__(self, services: Services, run: str) -> None:
        self.services, self.run = services, run
        self.topics: list[str] = []
        self.databases: list[str] = []

    def topic(self, part: str, partitions: int) -> str:
        from pipeline.adapters import kafka_io

        name = f"bench.{part}.{self.run}"
        kafka_io.ensure_topic(self.services.bootstrap, name, partitions=partitions,
                              options=self.services.settings.kafka_client_options())
        self.topics.append(name)
        return name

    def database(self, part: str) -> str:
        """A fresh database with the current schema, made by the schema owner (as ``pipeline migrate`` would)."""
        import pymysql

        from pipeline.adapters.mysql import migrations

        name = f"pipeline_bench_{part}_{self.run}"
        admin = self.services.admin
        try:
            with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, \
                    conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}`")
        except pymysql.err.MySQLError as exc:
            raise ServiceError(f"bench: could not create database {name} as {admin} (set PIPELINE_MYSQL_ADMIN_URL "
                               f"to the schema owner): {exc.args[-1]}") from exc
        self.databases.append(name)
        migrations.migrate_schema(admin.with_database(name), "PIPELINE_MYSQL_ADMIN_URL")
        return name

    def close(self) -> None:
        import pymysql
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        if self.databases:
            try:
                with pymysql.connect(**self.services.admin.connect_arguments(database=False),
                                     autocommit=True) as conn, conn.cursor() as cur:
                    for name in self.databases:
                        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            except pymysql.err.MySQLError as exc:
                print(f"bench: could not drop {', '.join(self.databases)}: {exc}", file=sys.stderr)
        if self.topics:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.services.bootstrap, request_timeout_ms=30_000,
                                         **self.services.settings.kafka_client_options())
                try:
                    admin.delete_topics(self.topics, timeout_ms=30_000)
                finally:
                    admin.close()
            except KafkaError as exc:
                print(f"bench: could not delete topics {', '.join(self.topics)}: {exc}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- /proc


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree_rss_mib(pid: int, children: dict[int, list[int]] | None = None) -> float:
    """RSS of a process and all its descendants (a Python driver and its JVM), MiB."""
    from pipeline.services.procs import rss_mib

    children = _children() if children is None else children
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += rss_mib(current)
        todo.extend(children.get(current, []))
    return total


def listening_pid(host: str, port: int) -> int | None:
    """The local process listening on ``port`` (read from /proc/net/tcp* and /proc/*/fd), if the host is this
    machine and the process is visible to us."""
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", platform.node()):
        return None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    return int(entry)
        except OSError:
            continue
    return None


class _Every:
    """Calls ``tick`` every ``every_s`` in a daemon thread while the ``with`` block runs, and once more at its end."""

    def __init__(self, name: str, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self._every_s = every_s

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self.tick()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.tick()


class RssSampler(_Every):
    """Samples RSS every ``every_s`` in a thread: the services, and whichever process trees are being watched."""

    def __init__(self, services: dict[str, int | None], every_s: float = 0.5) -> None:
        super().__init__("rss", every_s)
        self.services = {k: v for k, v in services.items() if v is not None}
        self.peaks: dict[str, float] = {}
        self.watched: dict[str, int] = {}

    def tick(self) -> None:
        self.sample()

    def sample(self) -> None:
        children = _children()
        readings = {name: tree_rss_mib(pid, children) for name, pid in {**self.services, **self.watched}.items()}
        for name, mib in readings.items():
            self.peaks[name] = max(self.peaks.get(name, 0.0), mib)

    @contextmanager
    def watching(self, name: str, pid: int) -> Iterator[None]:
        self.watched[name] = pid
        try:
            yield
        finally:
            self.watched.pop(name, None)


# ---------------------------------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass(frozen=True)
class Batch:
    batch_id: int
    start_s: float  # batchTimestampMs: when the trigger fired
    end_s: float | None  # commits/N written; None while running
    messages: int

    @property
    def seconds(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s


def _log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").lstrip("\0").splitlines()


def query_dirs(checkpoint: Path) -> list[Path]:
    return sorted(p.parent for p in checkpoint.glob("*/offsets")) if checkpoint.exists() else []


class BatchTracker(_Every):
    """Every batch of the streaming queries under a checkpoint, from their own logs: start (``offsets/N``'s
    batchTimestampMs), end (when ``commits/N`` was written) and messages read (offset differences, from the starting
    offsets in ``sources``). Read in a thread while the queries run: Spark deletes all but the newest
    ``spark.sql.streaming.minBatchesToRetain`` batches of the logs."""

    def __init__(self, checkpoint: Path, every_s: float = 0.1) -> None:
        super().__init__("batches", every_s)
        self.checkpoint = checkpoint
        self._offsets: dict[tuple[Path, int], list[dict[str, dict[str, int]]]] = {}
        self._batches: dict[tuple[Path, int], Batch] = {}
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.poll()

    def poll(self) -> None:
        for query in query_dirs(self.checkpoint):
            try:
                with self._lock:
                    self._read(query)
            except (OSError, ValueError, KeyError, IndexError):
                continue  # a file being replaced, or deleted under us: the next poll sees it whole

    def _read(self, query: Path) -> None:
        if (query, -1) not in self._offsets:
            initial: list[dict[str, dict[str, int]]] = []
            for source in sorted((query / "sources").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
                first = source / "0"
                initial.append(json.loads(_log_lines(first)[1]) if first.exists() else {})
            self._offsets[(query, -1)] = initial
        ids = sorted(int(p.name) for p in (query / "offsets").glob("*") if p.name.isdigit())
        for batch_id in ids:
            key = (query, batch_id)
            if key not in self._batches:
                lines = _log_lines(query / "offsets" / str(batch_id))
                started = json.loads(lines[1])["batchTimestampMs"] / 1000
                sources = [json.loads(line) if line.strip().startswith("{") else {} for line in lines[2:]]
                before = self._offsets.get((query, batch_id - 1), self._offsets[(query, -1)])
                read = 0
                for i, now in enumerate(sources):
                    previous = before[i] if i < len(before) else {}
                    for topic, parts in now.items():
                        for part, offset in parts.items():
                            read += int(offset) - int(previous.get(topic, {}).get(part, 0))
                self._offsets[key] = sources
                self._batches[key] = Batch(batch_id, started, None, read)
            batch = self._batches[key]
            commit = query / "commits" / str(batch_id)
            if batch.end_s is None and commit.exists():
                self._batches[key] = dataclasses.replace(batch, end_s=commit.stat().st_mtime)

    def batches(self) -> list[Batch]:
        """Committed batches, in order."""
        with self._lock:
            committed = [b for b in self._batches.values() if b.end_s is not None]
        return sorted(committed, key=lambda b: (b.start_s, b.batch_id))

    def first_commit_s(self) -> float | None:
        ends = [b.end_s for b in self.batches() if b.batch_id == 0 and b.end_s is not None]
        return min(ends) if ends else None

    def steady(self) -> dict[str, Any]:
        """From the first batch with input's start to the last one's end, over every query of the checkpoint."""
        batches = [b for b in self.batches() if b.messages]
        if not batches:
            raise ServiceError(f"bench: no committed batch with input in {self.checkpoint}")
        first, last = min(b.start_s for b in batches), max(b.end_s or 0.0 for b in batches)
        return {"seconds": round(last - first, 3), "batches": len(batches),
                "messages": sum(b.messages for b in batches), "first_batch_start_s": first, "last_batch_end_s": last,
                "batch_seconds": [round(b.seconds or 0.0, 3) for b in batches]}


# ---------------------------------------------------------------------------------------------------- children


class Child:
    """A ``pipeline``-style subprocess in its own session (a Ctrl-C of the bench does not reach its JVM directly),
    output to files."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path, name: str) -> None:
        self.name, self.out, self.err = name, logs / f"{name}.out", logs / f"{name}.err"
        self.started_s = time.time()
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.ended_s: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float, progress: Callable[[], None] | None = None) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(f"bench: {self.name} did not finish within {timeout_s:.0f} s")
            if progress:
                progress()
            time.sleep(0.05)
        self.ended_s = self.ended_s or time.time()
        return self.proc.returncode

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM to the Python process only: the job stops its query, prints its summary and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def failed(self, what: str) -> ServiceError:
        tail = " | ".join(self.err.read_text(errors="replace").strip().splitlines()[-5:])
        return ServiceError(f"bench: {what} (exit {self.proc.returncode}): {tail}")


def job_line(text: str) -> dict[str, Any]:
    """What ``pipeline process`` printed on exit: trades counted and its own batch-time percentiles."""
    out: dict[str, Any] = {"line": next((line for line in text.splitlines() if line.startswith("process:")), None)}
    for key, pattern in (("trades_counted", r"(\d+) trades counted"), ("batch_ms_p50", r"batch time p50 (\d+) ms"),
                         ("batch_ms_p95", r"p95 (\d+) ms"), ("batch_ms_max", r"max (\d+) ms")):
        found = re.search(pattern, text)
        out[key] = int(found.group(1)) if found else None
    # "time in batches: read 18.2 s, side 0.5 s, islands 5.2 s, mysql 1.8 s", if the job says where time went
    phases = re.search(r"time in batches: ([^;]*)", text)
    out["phases_s"] = {name.strip(): float(seconds) for name, seconds in
                       re.findall(r"([\w ]+?) ([\d.]+) s", phases.group(1))} if phases else None
    return out


# ---------------------------------------------------------------------------------------------------- parts


class Bench:
    def __init__(self, services: Services, sizes: Sizes, partitions: int, work: Path, progress: Progress,
                 rss: RssSampler) -> None:
        self.services, self.sizes, self.partitions = services, sizes, partitions
        self.work, self.progress, self.rss = work, progress, rss
        self.run = uuid.uuid4().hex[:8]

    @contextmanager
    def resources(self) -> Iterator[Resources]:
        res = Resources(self.services, self.run)
        try:
            yield res
        finally:
            res.close()

    def _sink(self, topic: str) -> Any:
        from pipeline.adapters import kafka_io

        return kafka_io.TradeSink(self.services.bootstrap, topic, options=self.services.settings.kafka_client_options())

    # -- kafka-python's raw produce -------------------------------------------------------------------------

    def raw_produce(self, data: Dataset, topic: str) -> dict[str, Any]:
        """The very producer the replay uses (``TradeSink``'s settings), fed the pre-encoded messages: send all,
        flush once."""
        sink = self._sink(topic)
        producer = sink._producer  # the sink's own KafkaProducer: same settings, none of the pipeline's work
        tick = every(5.0)
        try:
            started = time.perf_counter()
            for i, (key, value) in enumerate(data.messages):
                producer.send(topic, key=key, value=value)
                if i % 10_000 == 0 and tick():
                    self.progress(f"    raw produce: {i:,} of {len(data.messages):,} sent")
            producer.flush()
            seconds = time.perf_counter() - started
        finally:
            sink.close()
        return {"messages": len(data.messages), "seconds": round(seconds, 3),
                "messages_per_s": round(len(data.messages) / seconds)}

    # -- processor next to Spark's read + count ---------------------------------------------------------------

    def spark_count(self, topic: str, expected: int) -> dict[str, Any]:
        checkpoint = self.work / f"count-checkpoint-{self.run}"
        env = self.services.env(topic, "unused", checkpoint)
        child = Child(["-m", "pipeline.bench", "count", topic, str(checkpoint / QUERY_DIR)], env, self.work,
                      "spark-count")
        with self.rss.watching("spark_count", child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(1800, self._committed(tracker, expected, "Spark read + count"))
        if code != 0:
            raise child.failed("the Spark read + count session failed")
        counted = json.loads(child.stdout().strip().splitlines()[-1])["messages"]
        wall = (child.ended_s or time.time()) - child.started_s
        s = tracker.steady()
        return {"messages_counted": counted, "steady_s": s["seconds"], "wall_s": round(wall, 3),
                "batches": s["batches"], "batch_s": s["batch_seconds"],
                "peak_rss_mib": round(self.rss.peaks.get("spark_count", 0.0))}

    def processor(self, topic: str, database: str, trades: int, messages: int) -> dict[str, Any]:
        checkpoint = self.work / f"processor-checkpoint-{self.run}"
        env = self.services.env(topic, database, checkpoint)
        child = Child(["-m", "pipeline", "process", "--until-idle"], env, self.work, "processor")
        with self.rss.watching("processor", child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(3600, self._committed(tracker, messages, "pipeline process --until-idle"))
        if code != 0:
            raise child.failed("pipeline process --until-idle failed")
        wall = (child.ended_s or time.time()) - child.started_s
        s = tracker.steady()
        line = job_line(child.stdout())
        first = tracker.first_commit_s()
        return {"trades": trades, "messages": messages, "steady_s": s["seconds"],
                "steady_trades_per_s": round(trades / s["seconds"]), "wall_s": round(wall, 3),
                "wall_trades_per_s": round(trades / wall), "batches": s["batches"], "batch_s": s["batch_seconds"],
                "start_to_first_batch_start_s": round(s["first_batch_start_s"] - child.started_s, 3),
                "start_to_first_commit_s": round(first - child.started_s, 3) if first else None,
                "trades_counted": line["trades_counted"], "job": line,
                "peak_rss_mib": round(self.rss.peaks.get("processor", 0.0))}

    def _committed(self, tracker: BatchTracker, total: int, what: str) -> Callable[[], None]:
        tick = every(5.0)

        def show() -> None:
            if tick():
                batches = tracker.batches()
                done = sum(b.messages for b in batches)
                self.progress(f"    {what}: {len(batches)} batches committed, {done:,} of {total:,} messages")

        return show

    # -- catch-up after a long outage ----------------------------------------------------------------------

    def outage(self, topic: str, database: str, symbols: int, minutes: int) -> dict[str, Any]:
        """Live-mode traffic of an outage (``pipeline.outage``: trades and one heartbeat per symbol per minute)
        waiting in the topic, then ``pipeline process --until-idle``: its wall time is the catch-up a user waits."""
        from pipeline import outage
        from pipeline.adapters.mysql import reads
        from pipeline.core.messages import Heartbeat

        traffic = outage.live_outage(symbols, minutes, int(time.time() * 1000))
        sink = self._sink(topic)
        try:
            for message in traffic.messages:
                sink.send_heartbeat(message) if isinstance(message, Heartbeat) else sink.send_trade(message)
            sink.flush()
        finally:
            sink.close()
        name = f"outage-{symbols}x{minutes}"
        checkpoint = self.work / f"{name}-checkpoint-{self.run}"
        child = Child(["-m", "pipeline", "process", "--until-idle"], self.services.env(topic, database, checkpoint),
                      self.work, name)
        with self.rss.watching(name, child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(1800, self._committed(tracker, len(traffic.messages), name))
        if code != 0:
            raise child.failed(f"pipeline process --until-idle ({name}) failed")
        wall = (child.ended_s or time.time()) - child.started_s
        windows = {(t.symbol, t.event_time_ms - t.event_time_ms % MINUTE_MS) for t in traffic.trades}
        rows = reads.read_windows(self.services.reader.with_database(database))
        s, line = tracker.steady(), job_line(child.stdout())
        return {"symbols": symbols, "minutes": minutes, "trades": len(traffic.trades),
                "heartbeats": traffic.heartbeats, "catch_up_s": round(wall, 1), "steady_s": s["seconds"],
                "batches": s["batches"], "trades_counted": line["trades_counted"],
                "windows": len(windows), "windows_final": sum(1 for r in rows if r["is_final"]),
                "exact_count": line["trades_counted"] == len(traffic.trades) and len(rows) == len(windows),
                "job": line}

    # -- replay ------------------------------------------------------------------------------------------

    def replay(self, data: Dataset, topic: str) -> dict[str, Any]:
        archives = data.write_archives(self.work / "archives")
        env = self.services.env(topic, "unused", self.work / "unused-checkpoint")
        child = Child(["-m", "pipeline", "replay", "--source", str(archives), "--speed", "max"], env, self.work,
                      "replay")
        tick = every(5.0)

        def show() -> None:
            if tick():
                self.progress("    pipeline replay: validating, then publishing...")

        code = child.wait(3600, show)
        if code != 0:
            raise child.failed("pipeline replay failed")
        wall = (child.ended_s or time.time()) - child.started_s
        text = child.stdout()
        found = re.search(r"published (\d+).* in ([\d.]+)s", text)
        published = int(found.group(1)) if found else data.trades
        seconds = float(found.group(2)) if found else wall
        shutil.rmtree(archives, ignore_errors=True)
        return {"trades": published, "publishing_s": seconds, "trades_per_s": round(published / max(seconds, 1e-9)),
                "wall_s": round(wall, 3), "wall_trades_per_s": round(published / wall),
                "line": next((line for line in text.splitlines() if line.startswith("replay:")), None)}

    # -- live pace ---------------------------------------------------------------------------------------

    def live(self, name: str, topic: str, database: str, seconds: float, need_final: bool,
             seed_run_id: str | None = None) -> dict[str, Any]:
        checkpoint = self.work / f"{name}-checkpoint-{self.run}"
        if seed_run_id:  # the query id Spark will use (read from the checkpoint's metadata): the ledger's run id
            (checkpoint / QUERY_DIR).mkdir(parents=True)
            (checkpoint / QUERY_DIR / "metadata").write_text(json.dumps({"id": seed_run_id}) + "\n")
        env = self.services.env(topic, database, checkpoint)
        reader = self.services.reader.with_database(database)
        child = Child(["-m", "pipeline", "process"], env, self.work, name)
        try:
            with self.rss.watching(name, child.pid), BatchTracker(checkpoint) as tracker:
                first = self._first_commit(child, tracker)
                self.progress(f"    {name}: first batch committed {first:.1f} s after `pipeline process` started; "
                              f"sending {self.sizes.rate} trades/s")
                with Watcher(reader) as watcher:
                    sent = LiveProducer(self._sink(topic), self.sizes.rate, HEARTBEAT_LAG_S).run(
                        seconds, need_final, self.progress, watcher)
                    watcher.wait_for(sent, need_final, timeout_s=90, progress=self.progress)
            code = child.stop()
        finally:
            child.kill()
        if code != 0:
            raise child.failed(f"pipeline process ({name}) failed")
        # The first batches of a fresh JVM are slow (class loading, JIT, first plans): figures after warmup_s too.
        warmup_s = min(30.0, seconds / 4)
        batches = [b for b in tracker.batches() if b.messages]
        out = {"first_batch_s": round(first, 3), "seconds": round(sent.seconds, 1), "rate_per_s": self.sizes.rate,
               **watcher.figures(sent, warmup_s),
               "batch_ms": spread([1000 * (b.seconds or 0.0) for b in batches], 50, 95),
               # (every batch, if none started after the warm-up: a very slow machine)
               "batch_ms_after_warmup": spread([1000 * (b.seconds or 0.0) for b in (
                   [b for b in batches if b.start_s >= sent.started_s + warmup_s] or batches)], 50, 95),
               "job": job_line(child.stdout()),
               "peak_rss_mib": round(self.rss.peaks.get(name, 0.0))}
        if seed_run_id:
            out["ledger_run_id_is_the_seeded_one"] = watcher.run_ids == {seed_run_id}
        return out

    def _first_commit(self, child: Child, tracker: BatchTracker) -> float:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            first = tracker.first_commit_s()
            if first is not None:
                return first - child.started_s
            if not child.running():
                raise child.failed("pipeline process exited before its first batch")
            time.sleep(0.02)
        raise ServiceError("bench: pipeline process committed no batch within 300 s")

    def floor(self, topic: str, seconds: float) -> dict[str, Any]:
        """Spark's own floor for a live batch: a ``foreachBatch`` query on the same kind of topic, connector and
        trigger that only counts, fed at the same pace; its batch times from its checkpoint."""
        checkpoint = self.work / f"floor-checkpoint-{self.run}"
        child = Child(["-m", "pipeline.bench", "count", topic, str(checkpoint / QUERY_DIR), str(LIVE_TRIGGER_S)],
                      self.services.env(topic, "unused", checkpoint), self.work, "floor")
        try:
            with BatchTracker(checkpoint) as tracker:
                self._first_commit(child, tracker)
                sent = LiveProducer(self._sink(topic), self.sizes.rate, HEARTBEAT_LAG_S).run(
                    seconds, False, self.progress, None)
                time.sleep(2.0)  # the last sends' batches
            code = child.stop()
        finally:
            child.kill()
        if code != 0:
            raise child.failed("the floor query failed")
        warm = [1000 * (b.seconds or 0.0) for b in tracker.batches()
                if b.messages and b.start_s >= sent.started_s + min(30.0, seconds / 4)]
        return {"trigger_s": LIVE_TRIGGER_S, "seconds": round(sent.seconds, 1), "batch_ms": spread(warm, 50, 99)}

    def seed_ledger(self, database: str, run_id: str, rows: int) -> float:
        """``rows`` ledger rows of run ``run_id``, one a minute over the past ``rows`` minutes, as the job writes
        them (schema of migrations.MIGRATIONS: keyed by the fingerprint of what a batch read)."""
        from pipeline.adapters.mysql import connection
        from pipeline.core import times

        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        conn = connection.connect(self.services.admin.with_database(database))
        try:
            with conn.cursor() as cur:
                for chunk in range(0, rows, 2000):
                    params = []
                    for batch_id in range(chunk, min(rows, chunk + 2000)):
                        applied = times.utc(now_ms - (rows - batch_id) * MINUTE_MS)
                        fingerprint = hashlib.sha256(f"{run_id}/{batch_id}".encode()).hexdigest()
                        offsets = f"binance.aggtrades/0:{batch_id * 300}-{batch_id * 300 + 299}"
                        params.append((run_id, "stream", batch_id, fingerprint, offsets, 3, 0, 0, applied, 300))
                    cur.executemany("INSERT INTO pipeline_batches (run_id, query_name, batch_id, fingerprint, "
                                    "offsets, rows_written, rows_finalized, final_rows_refused, applied_at, "
                                    "trades_merged) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", params)
            conn.commit()
        finally:
            conn.close()
        return time.perf_counter() - started


class LiveProducer:
    """Trades stamped now at ``rate``/s over the 5 symbols (skewed as WEIGHTS), and every second a coverage
    heartbeat per symbol (``T`` = now - lag) after a flush, as the live producer sends them. Every ack is timed."""

    @dataclasses.dataclass
    class Sent:
        acks: list[tuple[int, int, float] | None]  # per trade: partition, offset, ack time
        windows: list[tuple[str, int]]  # per trade: its (symbol, minute start)
        heartbeats: list[tuple[str, int, float]]  # symbol, T, ack time
        started_s: float = 0.0
        seconds: float = 0.0

    def __init__(self, sink: Any, rate: int, lag_s: float, seed: int = 5) -> None:
        self.sink, self.rate, self.lag_ms = sink, rate, int(lag_s * 1000)
        self.rng = random.Random(seed)

    def run(self, seconds: float, need_final: bool, progress: Progress, watcher: Watcher | None,
            ) -> LiveProducer.Sent:
        producer, topic = self.sink._producer, self.sink.topic  # the sink's KafkaProducer, settings included
        symbols, weights = [s for s, _ in WEIGHTS], [w for _, w in WEIGHTS]
        agg = {s: 1_000_000 for s in symbols}
        trade_id = {s: 5_000_000 for s in symbols}
        price = dict(START_PRICE_E8)
        sent = LiveProducer.Sent([], [], [])
        lock = threading.Lock()

        def on_trade(i: int, md: Any) -> None:
            sent.acks[i] = (md.partition, md.offset, time.time())

        def on_heartbeat(symbol: str, t: int, _md: Any) -> None:
            with lock:
                sent.heartbeats.append((symbol, t, time.time()))

        start_s = sent.started_s = time.time()
        covered_from = int(start_s * 1000) // MINUTE_MS * MINUTE_MS  # a first start: the start of its minute
        end_s = start_s + seconds
        if need_final:  # at least one minute must end (and be declared) while trades flow
            boundary = (int(start_s * 1000) // MINUTE_MS + 1) * MINUTE_MS / 1000
            end_s = max(end_s, boundary + self.lag_ms / 1000 + 1.5)
        t0, next_beat, tick = time.monotonic(), time.monotonic() + 1.0, every(10.0)
        try:
            while True:
                now = time.monotonic()
                if now >= t0 + (end_s - start_s):
                    break
                due = int((now - t0) * self.rate) - len(sent.windows)
                for symbol in self.rng.choices(symbols, weights, k=max(0, due)):
                    now_ms = int(time.time() * 1000)
                    price[symbol] = max(1000, price[symbol] + price[symbol] // 100_000 * self.rng.randint(-3, 3))
                    last = trade_id[symbol] + (0 if self.rng.random() < 0.7 else self.rng.randint(1, 4))
                    value = (f'{{"v":1,"type":"trade","s":"{symbol}","a":{agg[symbol]},'
                             f'"p":"{_decimal_e8(price[symbol])}","q":"{_decimal_e8(self.rng.randint(1, 10**8))}",'
                             f'"f":{trade_id[symbol]},"l":{last},"T":{now_ms},'
                             f'"m":{"true" if self.rng.random() < 0.5 else "false"},"M":true}}').encode()
                    index = len(sent.windows)
                    sent.acks.append(None)
                    sent.windows.append((symbol, now_ms // MINUTE_MS * MINUTE_MS))
                    producer.send(topic, key=symbol.encode(), value=value).add_callback(
                        functools.partial(on_trade, index))
                    agg[symbol], trade_id[symbol] = agg[symbol] + 1, last + 1
                if now >= next_beat:
                    self._beat(producer, topic, symbols, covered_from, on_heartbeat)
                    next_beat += 1.0
                if tick():
                    progress(f"    {len(sent.windows):,} trades sent"
                             + (f"; {watcher.status(sent)}" if watcher else ""))
                time.sleep(max(0.0, min(0.01, t0 + (len(sent.windows) + 1) / self.rate - time.monotonic())))
            self._beat(producer, topic, symbols, covered_from, on_heartbeat)  # the last coverage, as on a stop
            producer.flush()
            sent.seconds = time.time() - start_s
        finally:
            self.sink.close()
        return sent

    def _beat(self, producer: Any, topic: str, symbols: list[str], covered_from: int,
              on_heartbeat: Callable[[str, int, Any], None]) -> None:
        from pipeline.core import messages

        producer.flush()  # a heartbeat promises that every trade before it is in Kafka
        t = int(time.time() * 1000) - self.lag_ms
        for symbol in symbols:
            key, value = messages.encode_heartbeat(messages.Heartbeat(symbol, covered_from, t))
            producer.send(topic, key=key, value=value).add_callback(functools.partial(on_heartbeat, symbol, t))


class Watcher:
    """Reads MySQL every POLL_S (read-only account): ledger rows newly committed (with the offsets they applied)
    and windows newly final, each with the time it was first seen."""

    def __init__(self, url: MysqlUrl) -> None:
        self.url = url
        self.seen: dict[int, list[tuple[int, int, float]]] = {}  # partition -> (first, last, seen) by first
        self.finals: dict[tuple[str, int], float] = {}
        self.run_ids: set[str] = set()
        self._last_id = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watcher")

    def __enter__(self) -> Watcher:
        import pymysql

        self._conn = pymysql.connect(**self.url.connect_arguments(), autocommit=True,
                                     init_command="SET time_zone = '+00:00'")
        with self._conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM pipeline_batches")
            self._last_id = int(cur.fetchone()[0])
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._poll()
                self._stop.wait(POLL_S)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = exc

    def _poll(self) -> None:
        now = time.time()  # anything committed before this query started is seen "now"
        with self._conn.cursor() as cur:
            cur.execute("SELECT id, run_id, offsets FROM pipeline_batches WHERE id > %s ORDER BY id",
                        (self._last_id,))
            for row_id, run_id, offsets in cur.fetchall():
                self._last_id = max(self._last_id, int(row_id))
                self.run_ids.add(str(run_id))
                for part in (offsets or "").split():
                    where, _, span = part.rpartition(":")
                    first, _, last = span.partition("-")
                    bisect.insort(self.seen.setdefault(int(where.rpartition("/")[2]), []),
                                  (int(first), int(last), now))
            cur.execute("SELECT symbol, start_time FROM moving_averages WHERE is_final = 1")
            for symbol, start in cur.fetchall():
                key = (str(symbol), int(start.replace(tzinfo=UTC).timestamp() * 1000))
                self.finals.setdefault(key, now)

    def visible_at(self, partition: int, offset: int) -> float | None:
        ranges = self.seen.get(partition, [])
        i = bisect.bisect_right(ranges, (offset, math.inf, math.inf)) - 1
        if i >= 0 and ranges[i][0] <= offset <= ranges[i][1]:
            return ranges[i][2]
        return None

    def expected_finals(self, sent: LiveProducer.Sent) -> set[tuple[str, int]]:
        declared: dict[str, int] = {}
        for symbol, t, _ in list(sent.heartbeats):
            declared[symbol] = max(declared.get(symbol, 0), t)
        return {(s, start) for s, start in set(sent.windows) if start + MINUTE_MS <= declared.get(s, 0)}

    def status(self, sent: LiveProducer.Sent) -> str:
        if self._error:
            raise ServiceError(f"bench: reading MySQL failed: {self._error}")
        latencies = [v - a[2] for a in list(sent.acks) if a is not None
                     and (v := self.visible_at(a[0], a[1])) is not None]
        p50 = percentile(latencies, 50)
        return (f"{len(latencies):,} visible in MySQL" + (f", ack -> visible p50 {p50:.2f} s" if p50 else "")
                + f", {len(self.finals)} windows final")

    def wait_for(self, sent: LiveProducer.Sent, need_final: bool, timeout_s: float, progress: Progress) -> None:
        deadline, tick = time.monotonic() + timeout_s, every(5.0)
        remaining = list(sent.acks)
        while time.monotonic() < deadline:
            if self._error:
                raise ServiceError(f"bench: reading MySQL failed: {self._error}")
            remaining = [a for a in remaining if a is None or self.visible_at(a[0], a[1]) is None]
            pending = len(remaining)
            finals = self.expected_finals(sent) - set(self.finals) if need_final else set()
            if not pending and not finals:
                return
            if tick():
                progress(f"    waiting: {pending:,} trades not yet visible, {len(finals)} windows not yet final")
            time.sleep(0.2)
        raise ServiceError(f"bench: trades or final windows still missing in MySQL {timeout_s:.0f} s after the "
                           "last send")

    def figures(self, sent: LiveProducer.Sent, warmup_s: float) -> dict[str, Any]:
        timed = [(a[2], v - a[2]) for a in sent.acks
                 if a is not None and (v := self.visible_at(a[0], a[1])) is not None]
        latencies = [lat for _, lat in timed]
        warm = [lat for acked, lat in timed if acked >= sent.started_s + warmup_s]
        out: dict[str, Any] = {"trades_sent": len(sent.acks), "trades_visible": len(latencies),
                               "poll_interval_s": POLL_S, "ack_to_visible_s": spread(latencies, 50, 95, 99),
                               "warmup_s": warmup_s, "ack_to_visible_after_warmup_s": spread(warm, 50, 95, 99)}
        after_end, after_beat, beat_delay = [], [], []
        beats = sorted(sent.heartbeats, key=lambda h: h[2])
        for symbol, start in sorted(self.expected_finals(sent)):
            seen = self.finals.get((symbol, start))
            if seen is None:
                continue
            end = start + MINUTE_MS
            watermark = end / 1000 + HEARTBEAT_LAG_S  # when "now - lag" passed the window's end
            after_end.append(seen - watermark)
            beat = next((h for h in beats if h[0] == symbol and h[1] >= end), None)
            if beat is not None:
                after_beat.append(seen - beat[2])
                beat_delay.append(beat[2] - watermark)
        out.update({"heartbeat_lag_s": HEARTBEAT_LAG_S,
                    "final_after_window_end_plus_lag_s": spread(after_end, 50, 95),
                    "final_after_heartbeat_ack_s": spread(after_beat, 50, 95),
                    "heartbeat_ack_after_window_end_plus_lag_s": spread(beat_delay, 50, 95)})
        return out


# ---------------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Options:
    sizes: Sizes
    quick: bool
    parts: tuple[str, ...] = PARTS
    out: Path | None = None
    partitions: int | None = None


def run(options: Options, settings: Settings) -> dict[str, Any]:
    """Every selected measurement, one after the other; returns the report (also written as JSON)."""
    from pipeline.adapters import kafka_io

    progress = Progress()
    sizes = options.sizes
    if sizes.trades < 1000 or sizes.rate < 10 or sizes.live_seconds < 5 or sizes.ledger_seconds < 5:
        raise ConfigError("bench: --trades must be at least 1000, --rate at least 10, --live-seconds and "
                          "--ledger-seconds at least 5")
    services = connect_services(settings, progress)
    kafka_host, _, kafka_port = services.bootstrap.split(",")[0].rpartition(":")
    service_pids = {"kafka": listening_pid(kafka_host, int(kafka_port)) if kafka_port.isdigit() else None,
                    "mysql": listening_pid(services.writer.host, services.writer.port)}
    report: dict[str, Any] = {
        "version": 1, "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "pipeline bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
        "quick": options.quick, "sizes": dataclasses.asdict(sizes), "parts": list(options.parts),
        "machine": _machine(settings.spark_master),
        "services": {"backend": services.backend, "kafka": services.bootstrap,
                     "mysql": f"{services.writer.host}:{services.writer.port}"},
        "figures": {},
    }
    figures: dict[str, Any] = report["figures"]
    partitions = options.partitions or kafka_io.DEFAULT_PARTITIONS
    report["sizes"]["partitions"] = partitions
    started = time.monotonic()
    steps = [p for p in PARTS if p in options.parts]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeline-bench-")))
        rss = stack.enter_context(RssSampler(service_pids))
        bench = Bench(services, sizes, partitions, work, progress, rss)
        report["run_id"] = bench.run  # in every topic's and database's name
        number = iter(range(1, 100))
        total = len(steps) + (1 if {"processor", "replay"} & set(steps) else 0)

        def step(text: str) -> None:
            progress(f"{next(number)}/{total} {text}")

        data: Dataset | None = None
        if {"processor", "replay"} & set(steps):
            step(f"generating {sizes.trades:,} aggTrades over 5 symbols (one day, BTCUSDT ~50x ADAUSDT) and "
                 "loading them with kafka-python")
            data = generate(sizes.trades)
            res = stack.enter_context(bench.resources())
            loaded = res.topic("load", partitions)
            figures["raw_produce"] = bench.raw_produce(data, loaded)
            progress(f"    raw produce: {figures['raw_produce']['messages_per_s']:,} messages/s")
            if "processor" in steps:
                step("processor: Spark's read + count, then `pipeline process --until-idle`, on that topic")
                count = bench.spark_count(loaded, len(data.messages))
                figures["spark_read_count"] = {**count, "steady_trades_per_s": round(data.trades / count["steady_s"])}
                progress(f"    Spark read + count: {count['messages_counted']:,} messages, steady "
                         f"{count['steady_s']:.2f} s, wall {count['wall_s']:.1f} s")
                figures["processor"] = bench.processor(loaded, res.database("processor"), data.trades,
                                                       len(data.messages))
                p = figures["processor"]
                progress(f"    processor: steady {p['steady_s']:.2f} s ({p['steady_trades_per_s']:,} trades/s), "
                         f"wall {p['wall_s']:.1f} s")
                if p["trades_counted"] != data.trades:
                    progress(f"    WARNING: the job counted {p['trades_counted']} trades of {data.trades}")
            if "replay" in steps:
                step("replay: `pipeline replay --speed max` of the same trades as archives")
                figures["replay"] = bench.replay(data, res.topic("replay", partitions))
                progress(f"    replay: {figures['replay']['trades_per_s']:,} trades/s publishing, wall "
                         f"{figures['replay']['wall_s']:.1f} s")
            data = None  # the messages take memory the live runs should not share
        if "outage" in steps:
            step("outage: a long outage's live-mode traffic waiting in the topic, caught up by `pipeline process "
                 "--until-idle`: " + ", ".join(f"{n} symbols x {m / 60:g} h" for n, m in sizes.outages))
            figures["outage"] = []
            for symbols, minutes in sizes.outages:
                with bench.resources() as res:
                    o = bench.outage(res.topic(f"outage{symbols}x{minutes}", partitions),
                                     res.database(f"outage{symbols}x{minutes}"), symbols, minutes)
                figures["outage"].append(o)
                progress(f"    {symbols} x {minutes / 60:g} h ({o['trades']:,} trades, {o['heartbeats']:,} "
                         f"heartbeats): caught up in {o['catch_up_s']:.1f} s ({o['batches']} batches), "
                         f"{o['windows_final']:,} of {o['windows']:,} windows final")
        if "freshness" in steps:
            step(f"freshness: `pipeline process` running (trigger {LIVE_TRIGGER_S:g} s), {sizes.rate} trades/s "
                 f"for {sizes.live_seconds:g} s, {sizes.freshness_runs} runs; then Spark's floor for "
                 f"{sizes.floor_seconds:g} s")
            runs = []
            for i in range(sizes.freshness_runs):
                with bench.resources() as res:
                    runs.append(bench.live(f"freshness{i + 1}", res.topic(f"freshness{i + 1}", partitions),
                                           res.database(f"freshness{i + 1}"), sizes.live_seconds, need_final=True))
                a = runs[-1]["ack_to_visible_s"]
                progress(f"    run {i + 1}: ack -> visible p50 {a['p50']} s, p99 {a['p99']} s")
            # The worst run (by p99) stands for the part; every run is kept.
            figures["freshness"] = max(runs, key=lambda r: r["ack_to_visible_s"]["p99"] or math.inf)
            figures["freshness_runs"] = runs
            with bench.resources() as res:
                figures["spark_floor"] = bench.floor(res.topic("floor", partitions), sizes.floor_seconds)
        if "ledger" in steps:
            step(f"ledger: batch time at {sizes.rate} trades/s on an empty ledger, then on "
                 f"{sizes.ledger_rows:,} ledger rows")
            ledger: dict[str, Any] = {"rows": sizes.ledger_rows}
            with bench.resources() as res:
                ledger["empty"] = bench.live("ledger-empty", res.topic("ledger-empty", partitions),
                                             res.database("ledgerempty"), sizes.ledger_seconds, need_final=False)
            with bench.resources() as res:
                database, run_id = res.database("ledgermonth"), str(uuid.uuid4())
                seconds = bench.seed_ledger(database, run_id, sizes.ledger_rows)
                progress(f"    {sizes.ledger_rows:,} ledger rows inserted in {seconds:.1f} s")
                ledger["month"] = bench.live("ledger-month", res.topic("ledger-month", partitions), database,
                                             sizes.ledger_seconds, need_final=False, seed_run_id=run_id)
            empty = ledger["empty"]["batch_ms_after_warmup"]["p50"]
            month = ledger["month"]["batch_ms_after_warmup"]["p50"]
            ledger["p50_ratio_month_to_empty"] = round(month / empty, 3) if empty and month else None
            figures["ledger"] = ledger
        rss.sample()
        figures["peak_rss_mib"] = {
            "spark_driver": round(max((v for k, v in rss.peaks.items() if k not in ("kafka", "mysql", "spark_count")),
                                      default=0.0)) or None,
            "kafka": round(rss.peaks["kafka"]) if "kafka" in rss.peaks else None,
            "mysql": round(rss.peaks["mysql"]) if "mysql" in rss.peaks else None,
            "by_process": {k: round(v) for k, v in rss.peaks.items()},
        }
    _derive(figures)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["targets"] = targets(figures)
    return report


def _derive(f: dict[str, Any]) -> None:
    if "processor" in f and "spark_read_count" in f:
        f["processor_vs_spark_read"] = round(f["spark_read_count"]["steady_s"] / f["processor"]["steady_s"], 3)
    if "replay" in f and "raw_produce" in f:
        f["replay_vs_raw_produce"] = round(f["replay"]["trades_per_s"] / f["raw_produce"]["messages_per_s"], 3)
    if "freshness" in f:
        f["first_batch_s"] = f["freshness"]["first_batch_s"]


def _machine(spark_master: str | None) -> dict[str, Any]:
    import importlib.metadata

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    commit, dirty = None, None
    try:
        here = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True, capture_output=True,
                                timeout=5).stdout.strip() or None
        if commit:  # uncommitted changes to the package: the figures are of the working tree, not of the commit
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, text=True,
                                        capture_output=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "pyspark": version("pyspark"),
            "kafka_python": version("kafka-python"), "git_commit": commit, "git_dirty": dirty,
            "spark_master": spark_master or "local[2]"}


# ---------------------------------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    measured: float | None
    goal: float
    at_most: bool  # the measured value must stay at or below the goal (else at or above)
    shown: str

    @property
    def passed(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.goal if self.at_most else self.measured >= self.goal


def _get(f: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(f, dict) or key not in f:
            return None
        f = f[key]
    return f


def target_list(f: dict[str, Any]) -> list[Target]:
    empty = _get(f, "ledger", "empty", "batch_ms_after_warmup", "p50")
    month = _get(f, "ledger", "month", "batch_ms_after_warmup", "p50")
    return [
        Target("processor steady trades/s", _get(f, "processor", "steady_trades_per_s"), 100_000, False,
               ">= 100,000/s"),
        Target("processor / Spark read + count", f.get("processor_vs_spark_read"), 0.6, False, ">= 0.60"),
        Target("replay trades/s", _get(f, "replay", "trades_per_s"), 50_000, False, ">= 50,000/s"),
        Target("replay / raw produce", f.get("replay_vs_raw_produce"), 0.5, False, ">= 0.50"),
        Target("freshness p50", _get(f, "freshness", "ack_to_visible_s", "p50"), 0.5, True, "<= 0.5 s"),
        Target("freshness p99", _get(f, "freshness", "ack_to_visible_s", "p99"), 1.0, True, "<= 1 s"),
        Target("final row after the covering heartbeat's ack (max)",
               _get(f, "freshness", "final_after_heartbeat_ack_s", "max"), 1.0, True, "<= 1 s"),
        Target("first batch after start", f.get("first_batch_s"), 15.0, True, "<= 15 s"),
        Target("catch-up of the longest outage", max((o["catch_up_s"] for o in f.get("outage", [])), default=None),
               120.0, True, "<= 120 s"),
        # Flat: a month of ledger rows adds at most 20 % (+ 50 ms of noise) to the median batch.
        Target("batch time, month ledger vs empty", month, (empty or 0) * 1.2 + 50 if empty else math.inf, True,
               "flat (<= 1.2x + 50 ms)"),
    ]


def targets(f: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "measured": t.measured, "target": t.shown, "pass": t.passed} for t in target_list(f)]


def _mark(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def _n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def table(report: dict[str, Any]) -> str:
    """One markdown table: each figure, what it stands next to, the target and its mark."""
    f = report["figures"]
    marks = {t.name: _mark(t.passed) for t in target_list(f)}
    rows: list[tuple[str, str, str, str, str]] = []

    def add(figure: str, measured: str, beside: str = "", target: str = "", mark: str = "") -> None:
        rows.append((figure, measured, beside, target, mark))

    if "processor" in f:
        p, c = f["processor"], f.get("spark_read_count", {})
        add("processor, steady (first batch start -> last batch end)",
            f"{_n(p['steady_trades_per_s'])} trades/s ({_n(p['steady_s'], 2)} s; batches: {p['batches']})",
            f"Spark read + count: {_n(c.get('steady_trades_per_s'))}/s ({_n(c.get('steady_s'), 2)} s)",
            ">= 100,000/s", marks["processor steady trades/s"])
        add("processor / Spark read + count (steady)", _n(f.get("processor_vs_spark_read"), 2), "", ">= 0.60",
            marks["processor / Spark read + count"])
        add("processor, wall (incl. JVM + session start)",
            f"{_n(p['wall_s'], 1)} s ({_n(p['wall_trades_per_s'])} trades/s)",
            f"Spark read + count: {_n(c.get('wall_s'), 1)} s")
    if "replay" in f:
        r, raw = f["replay"], f.get("raw_produce", {})
        add("replay --speed max, publishing",
            f"{_n(r['trades_per_s'])} trades/s ({_n(r['publishing_s'], 1)} s; wall {_n(r['wall_s'], 1)} s)",
            f"kafka-python raw: {_n(raw.get('messages_per_s'))}/s ({_n(raw.get('seconds'), 1)} s)",
            ">= 50,000/s", marks["replay trades/s"])
        add("replay / raw produce", _n(f.get("replay_vs_raw_produce"), 2), "", ">= 0.50",
            marks["replay / raw produce"])
    for o in f.get("outage", []):
        add(f"catch-up after {o['symbols']} symbols x {o['minutes'] / 60:g} h down ({o['trades']:,} trades, "
            f"{o['heartbeats']:,} heartbeats)",
            f"{_n(o['catch_up_s'], 1)} s (`process --until-idle`, start to exit; {o['batches']} batches)",
            f"steady {_n(o['steady_s'], 1)} s; {o['windows_final']:,} of {o['windows']:,} windows final; "
            f"exact count: {o['exact_count']}", "<= 120 s", _mark(o["catch_up_s"] <= 120.0))
    if "freshness" in f:
        fr = f["freshness"]
        a, e, b = fr["ack_to_visible_s"], fr["final_after_window_end_plus_lag_s"], fr["final_after_heartbeat_ack_s"]
        w, batch = fr["ack_to_visible_after_warmup_s"], fr["batch_ms"]
        add(f"freshness: ack -> visible in MySQL ({fr['rate_per_s']}/s, {fr['seconds']:g} s)",
            f"p50 {_n(a['p50'], 2)} s, p95 {_n(a['p95'], 2)} s, p99 {_n(a['p99'], 2)} s "
            f"({_n(a['n'])} trades)",
            f"after the first {fr['warmup_s']:g} s: p50 {_n(w['p50'], 2)} s, p99 {_n(w['p99'], 2)} s; batch p50 "
            f"{_n(batch['p50'])} ms, p95 {_n(batch['p95'])} ms", "p50 <= 0.5 s, p99 <= 1 s",
            f"{marks['freshness p50']}, {marks['freshness p99']}")
        add("final row after the covering heartbeat's ack",
            f"p50 {_n(b['p50'], 2)} s, max {_n(b['max'], 2)} s ({b['n']} windows)",
            f"after window end + lag ({fr['heartbeat_lag_s']:g} s; heartbeats each second): p50 {_n(e['p50'], 2)} s, "
            f"max {_n(e['max'], 2)} s", "<= 1 s", marks["final row after the covering heartbeat's ack (max)"])
        add("`pipeline process` start -> first committed batch", f"{_n(fr['first_batch_s'], 1)} s", "", "<= 15 s",
            marks["first batch after start"])
        for i, one in enumerate(f.get("freshness_runs", [])):
            a, e = one["ack_to_visible_s"], one["final_after_heartbeat_ack_s"]
            add(f"  run {i + 1} of {len(f['freshness_runs'])}",
                f"ack -> visible p50 {_n(a['p50'], 2)} s, p99 {_n(a['p99'], 2)} s; batch p50 "
                f"{_n(one['batch_ms']['p50'])} ms", f"final after the heartbeat's ack max {_n(e['max'], 2)} s; "
                f"first batch {_n(one['first_batch_s'], 1)} s")
    if "spark_floor" in f:
        fl, job = f["spark_floor"], f.get("freshness", {}).get("batch_ms_after_warmup", {})
        add(f"Spark's floor: foreachBatch that only counts ({fl['trigger_s']:g} s trigger, same pace)",
            f"batch p50 {_n(fl['batch_ms']['p50'])} ms, p99 {_n(fl['batch_ms']['p99'])} ms",
            f"the job (worst run, after warm-up): batch p50 {_n(job.get('p50'))} ms, p95 {_n(job.get('p95'))} ms")
    if "ledger" in f:
        lg = f["ledger"]
        em, mo = lg["empty"]["batch_ms_after_warmup"], lg["month"]["batch_ms_after_warmup"]
        add(f"batch time, {lg['rows']:,} ledger rows (a month)",
            f"p50 {_n(mo['p50'])} ms, p95 {_n(mo['p95'])} ms ({mo['n']} batches)",
            f"empty ledger: p50 {_n(em['p50'])} ms, p95 {_n(em['p95'])} ms; ratio "
            f"{_n(lg['p50_ratio_month_to_empty'], 2)}", "flat", marks["batch time, month ledger vs empty"])
    rss = f.get("peak_rss_mib", {})
    add("peak RSS", f"Spark driver (python + JVM) {_n(rss.get('spark_driver'), 0, ' MiB')}",
        f"Kafka {_n(rss.get('kafka'), 0, ' MiB')}, MySQL {_n(rss.get('mysql'), 0, ' MiB')}")
    head = ("figure", "measured", "side by side", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    sizes = report["sizes"]
    title = (f"pipeline bench{' --quick' if report['quick'] else ''}: {sizes['trades']:,} trades, live "
             f"{sizes['rate']}/s; {report['started_at']}, {report['machine']['cpus']} cores, "
             f"{report['seconds']:g} s")
    return title + "\n\n" + "\n".join(lines)


def default_out() -> Path:
    return Path.cwd() / "bench" / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"


def main(options: Options, settings: Settings) -> int:
    out = options.out or default_out()
    report = run(options, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nJSON: {out.resolve()}")
    return 0


# ---------------------------------------------------------------------------------------------------- the counter


def count_topic(topic: str, checkpoint: str, trigger_s: float | None = None) -> int:
    """Spark alone: the same connector and source options as the job, each batch only counted. ``trigger_s``
    None: until the topic is drained (``availableNow``); else on that processing-time trigger until SIGTERM (the
    floor of a live batch: ``--only freshness``)."""
    from pipeline.compose import spark_session
    from pipeline.services import stack

    settings = Settings.from_mapping(os.environ)
    spark = spark_session(settings, app_name="pipeline-bench-count")
    counted: list[int] = []
    source = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", stack.kafka_bootstrap(settings))
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


if __name__ == "__main__":
    if sys.argv[1:2] != ["count"] or len(sys.argv) not in (4, 5):
        print("usage: python -m pipeline.bench count TOPIC CHECKPOINT [TRIGGER_SECONDS]", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(json.dumps({"messages": count_topic(sys.argv[2], sys.argv[3],
                                                  float(sys.argv[4]) if len(sys.argv) == 5 else None)}))
    except PipelineError as error:
        print(f"bench count: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from error
