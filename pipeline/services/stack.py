"""The local stack: Kafka + MySQL for the demo and the tests, with three backends chosen automatically.

- external: ``PIPELINE_KAFKA_BOOTSTRAP`` and ``PIPELINE_MYSQL_URL`` are both set; nothing is started;
- containers: a Docker engine answers and can get the images (testcontainers);
- processes: local Kafka (Maven artifacts) and MariaDB/MySQL processes; the default on machines without Docker.

``PIPELINE_STACK_BACKEND=processes|containers`` forces a backend. ``up`` records what it started in
``<state_dir>/stack.json`` (mode 0600: it holds the three MySQL accounts' passwords) so ``env``, ``status`` and
``down`` work from any shell; a file lock serialises concurrent ``up``/``down`` calls. A recorded pid is signalled
only while it still is the recorded process (``procs.is_ours``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError, ServiceError
from pipeline.services import containers, kafka_process, mysql_process, procs
from pipeline.services.connections import Connections, ServiceStatus
from pipeline.settings import MysqlUrl, Settings

BACKENDS = ("processes", "containers")


def _state_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def read_state(settings: Settings) -> dict[str, object] | None:
    try:
        return json.loads(_state_file(settings).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServiceError(f"the stack state file {_state_file(settings)} is unreadable: {exc}") from exc


def _connections(state: Mapping[str, object]) -> Connections:
    def url(key: str) -> MysqlUrl | None:
        return MysqlUrl.parse(str(state[key])) if state.get(key) else None  # a stack started before the split: None

    return Connections(
        kafka_bootstrap=str(state["bootstrap"]),
        mysql_url=MysqlUrl.parse(str(state["url"])),
        backend=str(state["backend"]),
        mysql_admin_url=url("admin_url"),
        mysql_read_url=url("read_url"),
    )


def external(settings: Settings) -> Connections | None:
    if settings.kafka_bootstrap and settings.mysql_url:
        return Connections(settings.kafka_bootstrap, settings.mysql_url, "external", settings.mysql_admin_url,
                           settings.mysql_read_url)
    return None


def choose_backend(forced: str | None) -> str:
    """``PIPELINE_STACK_BACKEND`` (``Settings.stack_backend``), else containers where Docker answers."""
    if forced:
        if forced not in BACKENDS:
            raise ConfigError(f"PIPELINE_STACK_BACKEND must be one of {', '.join(BACKENDS)}, got {forced!r}")
        return forced
    usable, _ = containers.docker_usable()
    return "containers" if usable else "processes"


def _alive(state: Mapping[str, object]) -> bool:
    return all(s.ok for s in _check(state, {}))


def up(settings: Settings) -> tuple[Connections, bool]:
    """Start the stack unless it already runs; returns the connections and whether anything was started."""
    ext = external(settings)
    if ext is not None:
        return ext, False
    with _locked(settings):
        state = read_state(settings)
        if state is not None:
            if _alive(state):
                return _connections(state), False
            _teardown(state)  # a half-dead stack: clear it and start afresh
            _state_file(settings).unlink(missing_ok=True)
        backend = choose_backend(settings.stack_backend)
        run_dir = settings.state_dir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        new_state: dict[str, object] = {"backend": backend, "run_dir": str(run_dir)}
        try:
            if backend == "containers":
                new_state.update(containers.start())
            else:
                kafka = new_state["kafka"] = kafka_process.start(settings.cache_dir, run_dir / "kafka")
                new_state["bootstrap"] = kafka["bootstrap"]
                mysql = new_state["mysql"] = mysql_process.start(run_dir / "mysql")
                new_state.update({key: mysql[key] for key in ("url", "admin_url", "read_url")})
        except BaseException:
            _teardown(new_state)
            raise
        # It holds the accounts' passwords: readable by its owner only, from the moment it exists.
        fd = os.open(_state_file(settings), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as state_file:
            state_file.write(json.dumps(new_state, indent=2))
        return _connections(new_state), True


def _teardown(state: Mapping[str, object]) -> None:
    for key in ("kafka_container", "mysql_container"):
        if key in state:
            containers.remove(str(state[key]))
    for key in ("kafka", "mysql"):
        service = state.get(key)
        if isinstance(service, dict) and "pid" in service:
            procs.stop_recorded(service)  # only if the pid still is the process recorded, never a later one
    run_dir = state.get("run_dir")
    if run_dir and Path(str(run_dir)).exists():
        shutil.rmtree(str(run_dir), ignore_errors=True)


def down(settings: Settings) -> bool:
    """Stop whatever ``up`` started and delete its throwaway data; returns whether anything was running."""
    with _locked(settings):
        state = read_state(settings)
        if state is None:
            return False
        _teardown(state)
        _state_file(settings).unlink(missing_ok=True)
        return True


def _check(state: Mapping[str, object], kafka_options: Mapping[str, object]) -> list[ServiceStatus]:
    conns = _connections(state)
    reader = conns.mysql_read_url or conns.mysql_url  # a health check reads: it never logs in as the writer
    out = []
    kafka, mysql = state.get("kafka"), state.get("mysql")
    for name, pid_holder, container_key, probe in (
        ("kafka", kafka, "kafka_container", lambda: kafka_process.metadata_ok(conns.kafka_bootstrap, kafka_options)),
        ("mysql", mysql, "mysql_container", lambda: mysql_process.ping(reader)),
    ):
        where = conns.kafka_bootstrap if name == "kafka" else f"{reader.host}:{reader.port}"
        if isinstance(pid_holder, dict):
            pid = int(pid_holder["pid"])
            if not procs.is_ours(pid, pid_holder):
                out.append(ServiceStatus(name, False, f"process {pid} is not running (log: {pid_holder['log']})"))
                continue
            where += f" pid {pid}, {procs.rss_mib(pid):.0f} MiB RSS"
        elif container_key in state and not containers.container_running(str(state[container_key])):
            out.append(ServiceStatus(name, False, f"container {str(state[container_key])[:12]} is not running"))
            continue
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append(ServiceStatus(name, False, f"{where}: not answering ({type(exc).__name__})"))
            continue
        out.append(ServiceStatus(name, True, where))
    return out


def status(settings: Settings) -> tuple[str, list[ServiceStatus]]:
    ext = external(settings)
    if ext is not None:
        given = {"backend": "external", "bootstrap": ext.kafka_bootstrap, "url": ext.mysql_url.render()}
        if ext.mysql_read_url is not None:
            given["read_url"] = ext.mysql_read_url.render()
        return "external", _check(given, settings.kafka_client_options())
    state = read_state(settings)
    if state is None:
        return "none", []
    return str(state["backend"]), _check(state, {})


def _from_stack(settings: Settings, variable: str) -> Connections:
    state = read_state(settings)
    if state is None:
        raise ServiceError(f"{variable} is not set and no local stack is running: run `pipeline stack up` or set it")
    return _connections(state)


def kafka_bootstrap(settings: Settings) -> str:
    """The environment first, then the running local stack."""
    return settings.kafka_bootstrap or _from_stack(settings, "PIPELINE_KAFKA_BOOTSTRAP").kafka_bootstrap


def mysql_url(settings: Settings) -> MysqlUrl:
    """The environment first, then the running local stack."""
    return settings.mysql_url or _from_stack(settings, "PIPELINE_MYSQL_URL").mysql_url


def mysql_admin_url(settings: Settings) -> MysqlUrl | None:
    """PIPELINE_MYSQL_ADMIN_URL; else, when the writer is the local stack's, the stack's schema owner; else None."""
    if settings.mysql_admin_url is not None or settings.mysql_url is not None:
        return settings.mysql_admin_url
    return _from_stack(settings, "PIPELINE_MYSQL_URL").mysql_admin_url


def mysql_read_url(settings: Settings) -> MysqlUrl:
    """PIPELINE_MYSQL_READ_URL; else PIPELINE_MYSQL_URL; else the local stack's read-only account."""
    if settings.mysql_read_url is not None or settings.mysql_url is not None:
        return settings.mysql_read_url or mysql_url(settings)
    conns = _from_stack(settings, "PIPELINE_MYSQL_READ_URL / PIPELINE_MYSQL_URL")
    return conns.mysql_read_url or conns.mysql_url


def connections(settings: Settings) -> Connections:
    ext = external(settings)
    if ext is not None:
        return ext
    backend = _from_stack(settings, "PIPELINE_KAFKA_BOOTSTRAP / PIPELINE_MYSQL_URL").backend
    return Connections(kafka_bootstrap(settings), mysql_url(settings), backend, mysql_admin_url(settings),
                       mysql_read_url(settings))


def checkpoint_dir(settings: Settings, name: str = "checkpoint") -> Path | str:
    """``PIPELINE_CHECKPOINT_DIR``, or else a directory that lives and dies with the local stack's data.

    A checkpoint records Kafka offsets; kept across ``stack down`` / ``up`` it would point at offsets of a topic that
    no longer exists. With external services (or no local stack) it is ``<state dir>/<name>``.
    """
    if settings.checkpoint_dir is not None:
        return settings.checkpoint_dir
    state = None if external(settings) else read_state(settings)
    if state is not None and state.get("run_dir"):
        return Path(str(state["run_dir"])) / name
    return settings.state_dir / name


@dataclasses.dataclass(frozen=True)
class LocalStack:
    """The local stack of these settings, as the composition root hands it to ``pipeline stack`` and the demo."""

    settings: Settings

    def up(self) -> tuple[Connections, bool]:
        return up(self.settings)

    def down(self) -> bool:
        return down(self.settings)

    def status(self) -> tuple[str, list[ServiceStatus]]:
        return status(self.settings)

    def connections(self) -> Connections:
        return connections(self.settings)

    def external(self) -> Connections | None:
        return external(self.settings)
