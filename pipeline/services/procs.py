"""Small process helpers: free ports, liveness, polling and stopping the local services' daemons; what ``/proc`` says
of a process (its children, its memory, the process listening on a port); and ``Child``, a command run as a child
process with its output in files (the bench's ``pipeline`` runs).

A recorded pid is signalled only while it still is the process that was recorded (``is_ours``: same start time and
command line): after a crash or a reboot the number may belong to anything, a system service included.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
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
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses): the
    state first, then the parent's pid, ...; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def identity(pid: int) -> dict[str, object] | None:
    """What tells a process from a later one that reuses its pid: its start time (clock ticks after boot, field 22
    of ``/proc/<pid>/stat``) and its command line. None if there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
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


def children() -> dict[int, list[int]]:
    """Every visible process's children, by the parent's pid (one pass over ``/proc``)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            out.setdefault(int(fields[1]), []).append(int(entry))
    return out


def tree_rss_mib(pid: int, tree: Mapping[int, list[int]] | None = None) -> float:
    """Resident memory of a process and all its descendants (a Python driver and its JVM), in MiB; ``tree`` is
    ``children()``, read once for several trees."""
    tree = children() if tree is None else tree
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += rss_mib(current)
        todo.extend(tree.get(current, []))
    return total


def listening_pid(host: str, port: int) -> int | None:
    """The local process listening on ``port`` (read from ``/proc/net/tcp*`` and ``/proc/*/fd``), if ``host`` is
    this machine and the process is visible to us."""
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
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
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


class Child:
    """A child process in its own session (a Ctrl-C meant for its parent does not reach it, nor a JVM it starts),
    its output in files: ``log`` takes stdout, and stderr too unless ``errors`` is given. ``stop`` asks it to end
    (SIGTERM to it alone: a ``pipeline`` command stops its work and exits cleanly); ``kill`` ends its whole process
    group (its JVM, a Maven it runs), whatever state it is in."""

    def __init__(self, args: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
                 errors: Path | None = None, name: str | None = None) -> None:
        self.name = name or Path(args[0]).name
        self.log, self.errors = log, errors
        self.started_s = time.time()
        self.ended_s: float | None = None
        with ExitStack() as files:
            out = files.enter_context(open(log, "wb"))
            err = files.enter_context(open(errors, "wb")) if errors is not None else subprocess.STDOUT
            self.proc = subprocess.Popen(list(args), env=None if env is None else dict(env), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float, tick: Callable[[], None] | None = None) -> int:
        """Its exit code; ``tick`` is called every 50 ms meanwhile. Killed, and an error, after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(f"{self.name} did not finish within {timeout_s:.0f} s")
            if tick:
                tick()
            time.sleep(0.05)
        self.ended_s = self.ended_s or time.time()
        return self.proc.returncode

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM to the process alone, then ``wait``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL to its process group: it and whatever it started that still runs."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def failed(self, what: str) -> ServiceError:
        """``what`` went wrong: the error, with the exit code and the last lines of its errors (else its log)."""
        return ServiceError(f"{what} (exit {self.proc.returncode}): {log_tail(self.errors or self.log, 5)}")
