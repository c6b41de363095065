"""Small process helpers shared by the local service backends: free ports, liveness, polling, stopping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ServiceError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """A TCP connect succeeds: the cheap first half of a readiness check."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); look at its state so a dead child is reported dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a detached daemon (own session, so it outlives the CLI and is stopped by process group)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, close_fds=True,
        )
    return proc.pid


@contextmanager
def stopped_on_failure(pid: int) -> Iterator[None]:
    """Whatever fails between spawning a daemon and handing it over must not leave it running."""
    try:
        yield
    except BaseException:
        stop(pid)
        raise


def wait_for(check: Callable[[], bool], *, pid: int, what: str, log_path: Path, timeout_s: float) -> None:
    """Poll ``check`` until it is true; fail fast with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ServiceError(f"{what} exited during start-up; last log lines: {log_tail(log_path)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure here only means "not ready yet"
            pass
        time.sleep(0.1)
    raise ServiceError(f"{what} did not become ready within {timeout_s:.0f}s; last log lines: {log_tail(log_path)}")


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def stop(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``timeout_s``."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not alive(pid):
                return
            time.sleep(0.1)
    if alive(pid):
        raise ServiceError(f"process {pid} would not stop")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
