"""The fault suite's own Kafka broker and MariaDB server, and the faults done to them.

Both are started through the same ``pipeline.services`` code as ``pipeline stack up`` (throwaway data directories,
free ports), never the session stack other suites share. A ``Daemon`` remembers the exact command line its process
was started with (``/proc/<pid>/cmdline``), so it can be killed (SIGKILL), frozen (SIGSTOP/SIGCONT) and started
again on the same port and the same data directory, as an operator's restart or a crashed container would be.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.services import procs


@dataclasses.dataclass
class Daemon:
    name: str
    pid: int
    argv: list[str]
    log: Path  # the log that start-up failures are explained from
    ready: Callable[[], bool]  # answers real requests (not only an open port)
    port: int
    kills: int = 0
    freezes: int = 0

    @classmethod
    def adopt(cls, name: str, pid: int, log: Path, ready: Callable[[], bool], port: int) -> Daemon:
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        assert argv, f"{name} (pid {pid}) has no command line: not running?"
        return cls(name, pid, argv, log, ready, port)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown, no flush."""
        os.kill(self.pid, signal.SIGCONT)  # a frozen process still dies on SIGKILL; be explicit anyway
        os.kill(self.pid, signal.SIGKILL)
        if not procs.reap(self.pid, 30.0):
            raise AssertionError(f"process {self.pid} survived SIGKILL for 30s")
        self.kills += 1

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a hung server, a paused VM)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.freezes += 1

    def thaw(self) -> None:
        if procs.alive(self.pid):
            os.kill(self.pid, signal.SIGCONT)

    def ready_now(self) -> bool:
        try:
            return procs.alive(self.pid) and self.ready()
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False

    def recover(self) -> None:
        """After a scenario, whatever it did: running and answering again (killed and restarted if need be)."""
        self.thaw()
        if self.ready_now():
            return
        if procs.alive(self.pid):
            self.kill()
        self.restart()

    def restart(self, timeout_s: float = 120.0) -> float:
        """Start the same command line again (same port, same data directory); returns seconds until ready."""
        assert not procs.alive(self.pid), f"{self.name} is still running"
        started = time.monotonic()
        deadline = started + timeout_s
        while procs.port_open(self.port):  # the old listener must be gone (it is, once the process is reaped)
            assert time.monotonic() < deadline, f"port {self.port} of {self.name} is still taken"
            time.sleep(0.1)
        self.pid = procs.spawn(self.argv, self.log.with_name(self.log.name + ".restarts"))
        procs.wait_for(lambda: procs.port_open(self.port), pid=self.pid, what=self.name, log_path=self.log,
                       timeout_s=max(1.0, deadline - time.monotonic()))
        procs.wait_for(self.ready, pid=self.pid, what=self.name, log_path=self.log,
                       timeout_s=max(1.0, deadline - time.monotonic()))
        return time.monotonic() - started

    def stop(self) -> None:
        if procs.alive(self.pid):
            os.kill(self.pid, signal.SIGCONT)
            procs.stop(self.pid)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (e.g. the JVM a ``pipeline process`` driver launched)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def wait_gone(pids: list[int], timeout_s: float) -> float:
    """Seconds until every pid has exited (they are not our children: only watched)."""
    started = time.monotonic()
    while any(procs.alive(p) for p in pids):
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"processes {[p for p in pids if procs.alive(p)]} outlived their parent by "
                                 f"{timeout_s:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - started
