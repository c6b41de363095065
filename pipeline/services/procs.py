"""Small process helpers shared by the local service backends: free ports, liveness, polling, stopping.

A recorded pid is signalled only while it still is the process that was recorded (``is_ours``: same start time and
command line): after a crash or a reboot the number may belong to anything, a system service included.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ServiceError

log = logging.getLogger(__name__)


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


def identity(pid: int) -> dict[str, object] | None:
    """What tells a process from a later one that reuses its pid: its start time (clock ticks after boot, field 22
    of ``/proc/<pid>/stat``) and its command line. None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses
    return {"start_time": int(fields[19]), "cmdline": cmdline.replace(b"\0", b" ").decode(errors="replace").strip()}


def is_ours(pid: int, recorded: Mapping[str, object]) -> bool:
    """Whether ``pid`` is still the process described by ``recorded`` (a service entry of the stack's state).

    Entries written before identities were recorded are matched by their data directory on the command line."""
    current = identity(pid)
    if current is None or not alive(pid):
        return False
    expected = recorded.get("identity")
    if isinstance(expected, Mapping):
        return current["start_time"] == expected.get("start_time") and current["cmdline"] == expected.get("cmdline")
    data_dir = recorded.get("data_dir")
    return bool(data_dir) and str(data_dir) in str(current["cmdline"])


def stop_recorded(recorded: Mapping[str, object], timeout_s: float = 20.0) -> bool:
    """Stop the process a state entry records, only if it still is that process; returns whether it was."""
    pid = int(str(recorded["pid"]))
    if not is_ours(pid, recorded):
        if alive(pid):
            log.warning("pid %d no longer is the recorded process: left alone", pid)
        return False
    stop(pid, timeout_s)
    return True


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
    """SIGTERM the process group, then SIGKILL whatever is left after ``timeout_s``.

    The group is signalled only if ``pid`` leads it (a daemon ``spawn`` started); otherwise the process alone."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        if reap(pid, wait):
            return
    if alive(pid):
        raise ServiceError(f"process {pid} would not stop")


def reap(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for a signalled process to be gone (collected if it is our child, so no zombie keeps
    its pid alive); whether it is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
