"""Kafka and MySQL through testcontainers, used when a Docker engine answers and can get the images.

Kafka is the ``apache/kafka`` image in a generic container (testcontainers' ``KafkaContainer`` targets Confluent
images). Containers outlive the CLI process that started them (Ryuk is off for ``stack up``), so ``down`` removes
them by id from any shell.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Callable
from typing import Any

from pipeline.errors import ServiceError
from pipeline.services import kafka_process, mysql_process, procs
from pipeline.settings import MysqlUrl

KAFKA_IMAGE = "apache/kafka:4.1.1"
MYSQL_IMAGE = "mysql:8.4"


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


def start() -> dict[str, object]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer
    from testcontainers.mysql import MySqlContainer

    port, controller_port = procs.free_port(), procs.free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:{controller_port}")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", f"1@localhost:{controller_port}")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_HEAP_OPTS", kafka_process.HEAP)
    )
    kafka.start()
    password = secrets.token_urlsafe(18)
    mysql = MySqlContainer(MYSQL_IMAGE, username=mysql_process.USER, password=password,
                           dbname=mysql_process.DATABASE)
    mysql.start()
    bootstrap = f"127.0.0.1:{port}"
    url = MysqlUrl(user=mysql_process.USER, password=password, host=mysql.get_container_host_ip(),
                   port=int(mysql.get_exposed_port(3306)), database=mysql_process.DATABASE)
    procs_ok = _wait(lambda: kafka_process.metadata_ok(bootstrap)) and _wait(lambda: mysql_process.ping(url))
    if not procs_ok:
        raise ServiceError("containers started but Kafka or MySQL did not answer")
    import pymysql

    # The same rights as the processes backend: its own database plus throwaway pipeline_* ones for tests.
    with pymysql.connect(host=url.host, port=url.port, user="root", password=mysql.root_password,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT ALL PRIVILEGES ON `{mysql_process.DATABASE}\\_%`.* TO '{mysql_process.USER}'@'%'")
    return {"kafka_container": kafka.get_wrapped_container().id, "mysql_container": mysql.get_wrapped_container().id,
            "bootstrap": bootstrap, "url": url.render()}


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
