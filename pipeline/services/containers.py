"""Kafka and MySQL through testcontainers, used when a Docker engine answers and can get the images.

Kafka is the ``apache/kafka`` image and MySQL the ``mysql`` image, both in generic containers (testcontainers'
``KafkaContainer`` targets Confluent images; its ``MySqlContainer`` defaults every password to "test"). Both are
published on 127.0.0.1 only. MySQL gets a random root password, used once to create the same three accounts as the
processes backend (``mysql_process.account_statements``), after which root may log in from inside the container
only. A start that fails half-way stops whatever it had started. Containers outlive the CLI process that started
them (Ryuk is off for ``stack up``), so ``down`` removes them by id from any shell.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ServiceError
from pipeline.services import kafka_process, mysql_process, procs

log = logging.getLogger(__name__)
KAFKA_IMAGE = "apache/kafka:4.1.1"
MYSQL_IMAGE = "mysql:8.4"
LOOPBACK = "127.0.0.1"  # where published ports listen: never 0.0.0.0


def _client() -> Any:
    docker: Any = importlib.import_module("docker")  # untyped package; imported only when containers are wanted
    return docker.from_env(timeout=5)


def docker_usable() -> tuple[bool, str]:
    """Whether a Docker engine answers and has (or can pull) both images; the reason when not."""
    try:
        import docker  # noqa: F401 - installed with the "containers" extra
    except ImportError:
        return False, "the docker Python package is not installed"
    try:
        client = _client()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable engine"
        return False, f"no Docker engine answers ({type(exc).__name__})"
    for image in (KAFKA_IMAGE, MYSQL_IMAGE):
        try:
            client.images.get(image)
        except Exception:  # noqa: BLE001
            try:
                client.images.pull(image)
            except Exception as exc:  # noqa: BLE001
                return False, f"Docker cannot get {image} ({type(exc).__name__})"
    return True, ""


def kafka_environment(port: int, controller_port: int) -> dict[str, str]:
    """A single-node KRaft broker advertising 127.0.0.1:``port`` (where the host reaches it)."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        # Inside the container: reachable through Docker's port mapping, which publishes on LOOPBACK only.
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{LOOPBACK}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{controller_port}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_HEAP_OPTS": kafka_process.HEAP,
    }


def mysql_environment(root_password: str) -> dict[str, str]:
    """The image creates root (with this password) and the database; the accounts are ours (no MYSQL_USER)."""
    if not root_password or root_password == "test":
        raise ValueError("the MySQL root password must be random")
    return {"MYSQL_ROOT_PASSWORD": root_password, "MYSQL_DATABASE": mysql_process.DATABASE}


def published(container_port: int, host_port: int) -> dict[str, tuple[str, int]]:
    """Docker's port bindings: ``container_port`` on the host's LOOPBACK:``host_port`` only."""
    return {f"{container_port}/tcp": (LOOPBACK, host_port)}


def provisioning_statements(passwords: Mapping[str, str]) -> list[tuple[str, tuple[str, ...] | None]]:
    """What root runs once: the three accounts (from any host: connections arrive through Docker's bridge), then
    root loses its remote login."""
    return [*mysql_process.account_statements("%", passwords), ("DROP USER IF EXISTS 'root'@'%'", None)]


@contextmanager
def stopped_on_failure() -> Iterator[list[Any]]:
    """Collects the containers a start creates; if the start fails, every one of them is stopped and removed."""
    started: list[Any] = []
    try:
        yield started
    except BaseException:
        for container in reversed(started):
            try:
                container.stop()
            except Exception:  # noqa: BLE001 - the original failure is what the user must see
                log.warning("removing a container of a failed start failed", exc_info=True)
        raise


def _container(image: str, env: Mapping[str, str], ports: Mapping[str, tuple[str, int]]) -> Any:
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image)
    for key, value in env.items():
        container.with_env(key, value)
    # testcontainers types host ports as plain ints; docker-py takes (host ip, port) tuples, which bind one address.
    # (Any: with testcontainers installed its type says int; without, mypy sees Any: no ignore fits both.)
    published: Any = container.ports
    published.update(dict(ports))
    return container


def start() -> dict[str, object]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    import pymysql

    port, controller_port, mysql_port = procs.free_port(), procs.free_port(), procs.free_port()
    root_password, passwords = secrets.token_urlsafe(24), mysql_process.new_passwords()
    bootstrap = f"{LOOPBACK}:{port}"
    with stopped_on_failure() as started:
        kafka = _container(KAFKA_IMAGE, kafka_environment(port, controller_port), published(port, port))
        started.append(kafka)
        kafka.start()
        mysql = _container(MYSQL_IMAGE, mysql_environment(root_password), published(3306, mysql_port))
        started.append(mysql)
        mysql.start()

        def root_connect() -> Any:
            return pymysql.connect(host=LOOPBACK, port=mysql_port, user="root", password=root_password,
                                   connect_timeout=3, autocommit=True)

        def root_ping() -> bool:
            with root_connect() as conn:
                conn.ping()
            return True

        if not (_wait(lambda: kafka_process.metadata_ok(bootstrap)) and _wait(root_ping)):
            raise ServiceError("containers started but Kafka or MySQL did not answer")
        with root_connect() as conn, conn.cursor() as cur:
            for statement, params in provisioning_statements(passwords):
                cur.execute(statement, params)
        return {"kafka_container": kafka.get_wrapped_container().id,
                "mysql_container": mysql.get_wrapped_container().id,
                "bootstrap": bootstrap, **mysql_process.urls(LOOPBACK, mysql_port, passwords)}


def _wait(check: Callable[[], bool]) -> bool:
    import time

    for _ in range(200):
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    return False


def container_running(container_id: str) -> bool:
    try:
        return bool(_client().containers.get(container_id).status == "running")
    except Exception:  # noqa: BLE001
        return False


def remove(container_id: str) -> None:
    try:
        _client().containers.get(container_id).remove(force=True)
    except Exception:  # noqa: BLE001 - already gone is fine for down
        pass
