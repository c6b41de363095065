"""What the bench reads off the processes it runs, while they run: peak memory (``/proc``, through
``services.procs``), every batch of their streaming queries (their checkpoints, through ``adapters.checkpoint``),
and what ``pipeline process`` printed when it exited."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from pipeline.adapters import checkpoint as checkpoints
from pipeline.errors import ServiceError
from pipeline.services import procs


class Periodic:
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


class RssSampler(Periodic):
    """Samples RSS every ``every_s`` in a thread: the services, and whichever process trees are being watched."""

    def __init__(self, services: dict[str, int | None], every_s: float = 0.5) -> None:
        super().__init__("rss", every_s)
        self.services = {k: v for k, v in services.items() if v is not None}
        self.peaks: dict[str, float] = {}
        self.watched: dict[str, int] = {}

    def tick(self) -> None:
        self.sample()

    def sample(self) -> None:
        tree = procs.children()
        readings = {name: procs.tree_rss_mib(pid, tree) for name, pid in {**self.services, **self.watched}.items()}
        for name, mib in readings.items():
            self.peaks[name] = max(self.peaks.get(name, 0.0), mib)

    @contextmanager
    def watching(self, name: str, pid: int) -> Iterator[None]:
        self.watched[name] = pid
        try:
            yield
        finally:
            self.watched.pop(name, None)

    def peak(self, name: str) -> int:
        """A watched tree's peak, whole MiB (0 if never sampled)."""
        return round(self.peaks.get(name, 0.0))


@dataclasses.dataclass(frozen=True)
class Batch:
    batch_id: int
    start_s: float  # batchTimestampMs: when the trigger fired
    end_s: float | None  # commits/N written; None while running
    messages: int

    @property
    def seconds(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s


class BatchTracker(Periodic):
    """Every batch of the streaming queries under a checkpoint, from their own logs: start (``offsets/N``'s
    batchTimestampMs), end (when ``commits/N`` was written) and messages read (offset differences, from the starting
    offsets in ``sources``). Read in a thread while the queries run: Spark deletes all but the newest
    ``spark.sql.streaming.minBatchesToRetain`` batches of the logs."""

    def __init__(self, checkpoint: Path, every_s: float = 0.1) -> None:
        super().__init__("batches", every_s)
        self.checkpoint = checkpoint
        self._ends: dict[tuple[Path, int], tuple[checkpoints.Offsets, ...]] = {}  # batch -1: the starting offsets
        self._batches: dict[tuple[Path, int], Batch] = {}
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.poll()

    def poll(self) -> None:
        for query in checkpoints.query_dirs(self.checkpoint):
            try:
                with self._lock:
                    self._read(query)
            except (OSError, ValueError, KeyError, IndexError):
                continue  # a file being replaced, or deleted under us: the next poll sees it whole

    def _read(self, query: Path) -> None:
        if (query, -1) not in self._ends:
            self._ends[(query, -1)] = tuple(checkpoints.starting_offsets(query))
        for batch_id in checkpoints.batch_ids(query):
            key = (query, batch_id)
            if key not in self._batches:
                logged = checkpoints.logged_batch(query, batch_id)
                before = self._ends.get((query, batch_id - 1), self._ends[(query, -1)])
                self._ends[key] = logged.ends
                self._batches[key] = Batch(batch_id, logged.started_ms / 1000, None, _read_between(before, logged.ends))
            batch = self._batches[key]
            if batch.end_s is None:
                committed = checkpoints.committed_at(query, batch_id)
                if committed is not None:
                    self._batches[key] = dataclasses.replace(batch, end_s=committed)

    def batches(self) -> list[Batch]:
        """Committed batches, in order."""
        with self._lock:
            committed = [b for b in self._batches.values() if b.end_s is not None]
        return sorted(committed, key=lambda b: (b.start_s, b.batch_id))

    def first_commit_s(self) -> float | None:
        ends = [b.end_s for b in self.batches() if b.batch_id == 0 and b.end_s is not None]
        return min(ends) if ends else None

    def steady(self) -> Steady:
        """From the first batch with input's start to the last one's end, over every query of the checkpoint."""
        batches = [b for b in self.batches() if b.messages]
        if not batches:
            raise ServiceError(f"bench: no committed batch with input in {self.checkpoint}")
        first, last = min(b.start_s for b in batches), max(b.end_s or 0.0 for b in batches)
        return Steady(round(last - first, 3), len(batches), first, [round(b.seconds or 0.0, 3) for b in batches])


@dataclasses.dataclass(frozen=True)
class Steady:
    seconds: float
    batches: int
    first_batch_start_s: float
    batch_seconds: list[float]


def _read_between(before: tuple[checkpoints.Offsets, ...], after: tuple[checkpoints.Offsets, ...]) -> int:
    """Messages read from offsets ``before`` to ``after`` (per source, topic and partition)."""
    read = 0
    for i, now in enumerate(after):
        previous = before[i] if i < len(before) else {}
        for topic, parts in now.items():
            for part, offset in parts.items():
                read += offset - previous.get(topic, {}).get(part, 0)
    return read


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
