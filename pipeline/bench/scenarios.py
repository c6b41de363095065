"""The measurements, each on its own topic, database and checkpoint: kafka-python's raw produce, Spark's read +
count and ``pipeline process --until-idle`` on a pre-loaded topic, the catch-up after a long outage, ``pipeline
replay --speed max``, ``pipeline process`` at live pace (freshness, and the ledger's month), and Spark's floor for a
live batch."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.adapters import checkpoint as checkpoints
from pipeline.adapters.mysql import runs
from pipeline.bench import workload
from pipeline.bench.live import HEARTBEAT_LAG_S, LiveProducer
from pipeline.bench.options import LIVE_TRIGGER_S, Sizes
from pipeline.bench.probes import BatchTracker, RssSampler, job_line
from pipeline.bench.report import Progress, every, spread
from pipeline.bench.resources import Resources, Services
from pipeline.bench.watcher import Watcher
from pipeline.core.messages import Heartbeat
from pipeline.core.windows import WINDOW_MS
from pipeline.errors import ServiceError
from pipeline.services.procs import Child

PROCESS = ["-m", "pipeline", "process"]
UNTIL_IDLE = [*PROCESS, "--until-idle"]


class Bench:
    def __init__(self, services: Services, sizes: Sizes, partitions: int, work: Path, progress: Progress,
                 rss: RssSampler) -> None:
        self.services, self.sizes, self.partitions = services, sizes, partitions
        self.work, self.progress, self.rss = work, progress, rss
        self.run = uuid.uuid4().hex[:8]

    def resources(self) -> Resources:
        return Resources(self.services, self.run)

    def child(self, name: str, args: list[str], topic: str, database: str, checkpoint: Path) -> Child:
        """A ``python`` child (``args`` after the interpreter) on this measurement's services."""
        return Child([sys.executable, *args], self.work / f"{name}.out", errors=self.work / f"{name}.err",
                     env=self.services.env(topic, database, checkpoint), name=f"bench: {name}")

    # -- kafka-python's raw produce -------------------------------------------------------------------------

    def raw_produce(self, data: workload.Dataset, topic: str) -> dict[str, Any]:
        """The very producer the replay uses (``TradeSink``'s settings), fed the pre-encoded messages: send all,
        flush once."""
        sink = self.services.sink(topic)
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
        child = self.child("spark-count", ["-m", "pipeline.bench", "count", topic,
                                           str(checkpoint / checkpoints.QUERY)], topic, "unused", checkpoint)
        with self.rss.watching("spark_count", child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(1800, self._committed(tracker, expected, "Spark read + count"))
        if code != 0:
            raise child.failed("bench: the Spark read + count session failed")
        counted = json.loads(child.output().strip().splitlines()[-1])["messages"]
        wall = (child.ended_s or time.time()) - child.started_s
        s = tracker.steady()
        return {"messages_counted": counted, "steady_s": s.seconds, "wall_s": round(wall, 3),
                "batches": s.batches, "batch_s": s.batch_seconds, "peak_rss_mib": self.rss.peak("spark_count")}

    def processor(self, topic: str, database: str, trades: int, messages: int) -> dict[str, Any]:
        checkpoint = self.work / f"processor-checkpoint-{self.run}"
        child = self.child("processor", UNTIL_IDLE, topic, database, checkpoint)
        with self.rss.watching("processor", child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(3600, self._committed(tracker, messages, "pipeline process --until-idle"))
        if code != 0:
            raise child.failed("bench: pipeline process --until-idle failed")
        wall = (child.ended_s or time.time()) - child.started_s
        s = tracker.steady()
        line = job_line(child.output())
        first = tracker.first_commit_s()
        return {"trades": trades, "messages": messages, "steady_s": s.seconds,
                "steady_trades_per_s": round(trades / s.seconds), "wall_s": round(wall, 3),
                "wall_trades_per_s": round(trades / wall), "batches": s.batches, "batch_s": s.batch_seconds,
                "start_to_first_batch_start_s": round(s.first_batch_start_s - child.started_s, 3),
                "start_to_first_commit_s": round(first - child.started_s, 3) if first else None,
                "trades_counted": line["trades_counted"], "job": line, "peak_rss_mib": self.rss.peak("processor")}

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
        """Live-mode traffic of an outage (``workload.live_outage``: trades and one heartbeat per symbol per minute)
        waiting in the topic, then ``pipeline process --until-idle``: its wall time is the catch-up a user waits."""
        traffic = workload.live_outage(symbols, minutes, int(time.time() * 1000))
        sink = self.services.sink(topic)
        try:
            for message in traffic.messages:
                sink.send_heartbeat(message) if isinstance(message, Heartbeat) else sink.send_trade(message)
            sink.flush()
        finally:
            sink.close()
        name = f"outage-{symbols}x{minutes}"
        checkpoint = self.work / f"{name}-checkpoint-{self.run}"
        child = self.child(name, UNTIL_IDLE, topic, database, checkpoint)
        with self.rss.watching(name, child.pid), BatchTracker(checkpoint) as tracker:
            code = child.wait(1800, self._committed(tracker, len(traffic.messages), name))
        if code != 0:
            raise child.failed(f"bench: pipeline process --until-idle ({name}) failed")
        wall = (child.ended_s or time.time()) - child.started_s
        windows = {(t.symbol, t.event_time_ms - t.event_time_ms % WINDOW_MS) for t in traffic.trades}
        counts = runs.window_counts(self.services.reader.with_database(database))
        s, line = tracker.steady(), job_line(child.output())
        return {"symbols": symbols, "minutes": minutes, "trades": len(traffic.trades),
                "heartbeats": traffic.heartbeats, "catch_up_s": round(wall, 1), "steady_s": s.seconds,
                "batches": s.batches, "trades_counted": line["trades_counted"],
                "windows": len(windows), "windows_final": counts.final,
                "exact_count": line["trades_counted"] == len(traffic.trades) and counts.windows == len(windows),
                "job": line}

    # -- replay ------------------------------------------------------------------------------------------

    def replay(self, data: workload.Dataset, topic: str) -> dict[str, Any]:
        archives = data.write_archives(self.work / "archives")
        child = self.child("replay", ["-m", "pipeline", "replay", "--source", str(archives), "--speed", "max"],
                           topic, "unused", self.work / "unused-checkpoint")
        tick = every(5.0)

        def show() -> None:
            if tick():
                self.progress("    pipeline replay: validating, then publishing...")

        code = child.wait(3600, show)
        if code != 0:
            raise child.failed("bench: pipeline replay failed")
        wall = (child.ended_s or time.time()) - child.started_s
        text = child.output()
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
            checkpoints.set_query_id(checkpoint, seed_run_id)
        child = self.child(name, PROCESS, topic, database, checkpoint)
        try:
            with self.rss.watching(name, child.pid), BatchTracker(checkpoint) as tracker:
                first = self._first_commit(child, tracker)
                self.progress(f"    {name}: first batch committed {first:.1f} s after `pipeline process` started; "
                              f"sending {self.sizes.rate} trades/s")
                with Watcher(self.services.reader.with_database(database), topic) as watcher:
                    sent = LiveProducer(self.services.sink(topic), self.sizes.rate, HEARTBEAT_LAG_S).run(
                        seconds, need_final, self.progress, watcher.status)
                    watcher.wait_for(sent, need_final, timeout_s=90, progress=self.progress)
            code = child.stop()
        finally:
            child.kill()
        if code != 0:
            raise child.failed(f"bench: pipeline process ({name}) failed")
        # The first batches of a fresh JVM are slow (class loading, JIT, first plans): figures after warmup_s too.
        warmup_s = min(30.0, seconds / 4)
        batches = [b for b in tracker.batches() if b.messages]
        out = {"first_batch_s": round(first, 3), "seconds": round(sent.seconds, 1), "rate_per_s": self.sizes.rate,
               **watcher.figures(sent, warmup_s),
               "batch_ms": spread([1000 * (b.seconds or 0.0) for b in batches], 50, 95),
               # (every batch, if none started after the warm-up: a very slow machine)
               "batch_ms_after_warmup": spread([1000 * (b.seconds or 0.0) for b in (
                   [b for b in batches if b.start_s >= sent.started_s + warmup_s] or batches)], 50, 95),
               "job": job_line(child.output()), "peak_rss_mib": self.rss.peak(name)}
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
                raise child.failed("bench: pipeline process exited before its first batch")
            time.sleep(0.02)
        raise ServiceError("bench: pipeline process committed no batch within 300 s")

    def floor(self, topic: str, seconds: float) -> dict[str, Any]:
        """Spark's own floor for a live batch: a ``foreachBatch`` query on the same kind of topic, connector and
        trigger that only counts, fed at the same pace; its batch times from its checkpoint."""
        checkpoint = self.work / f"floor-checkpoint-{self.run}"
        child = self.child("floor", ["-m", "pipeline.bench", "count", topic, str(checkpoint / checkpoints.QUERY),
                                     str(LIVE_TRIGGER_S)], topic, "unused", checkpoint)
        try:
            with BatchTracker(checkpoint) as tracker:
                self._first_commit(child, tracker)
                sent = LiveProducer(self.services.sink(topic), self.sizes.rate, HEARTBEAT_LAG_S).run(
                    seconds, False, self.progress)
                time.sleep(2.0)  # the last sends' batches
            code = child.stop()
        finally:
            child.kill()
        if code != 0:
            raise child.failed("bench: the floor query failed")
        warm = [1000 * (b.seconds or 0.0) for b in tracker.batches()
                if b.messages and b.start_s >= sent.started_s + min(30.0, seconds / 4)]
        return {"trigger_s": LIVE_TRIGGER_S, "seconds": round(sent.seconds, 1), "batch_ms": spread(warm, 50, 99)}

    def seed_ledger(self, database: str, run_id: str, rows: int) -> float:
        """``rows`` ledger rows of run ``run_id``, one a minute over the past ``rows`` minutes, as the job writes
        them; the seconds it took."""
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        runs.insert_batches(self.services.admin.with_database(database), (
            runs.PastBatch(run_id, checkpoints.QUERY, batch_id, hashlib.sha256(f"{run_id}/{batch_id}".encode())
                           .hexdigest(), f"binance.aggtrades/0:{batch_id * 300}-{batch_id * 300 + 299}",
                           now_ms - (rows - batch_id) * WINDOW_MS, rows_written=3, trades_merged=300)
            for batch_id in range(rows)))
        return time.perf_counter() - started
