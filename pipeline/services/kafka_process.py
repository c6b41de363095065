"""Apache Kafka 4.x as a local process: single-node KRaft, artifacts from Maven Central, capped heap.

    resolve jars (once, cached) -> pick free ports -> write server.properties -> format storage -> start -> metadata ok
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ServiceError
from pipeline.security import jaas_quoted
from pipeline.services import maven, procs

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"  # Kafka 4.0/4.1 log through slf4j 1.7.x; its POM leaves the backend out.
HEAP = "-Xmx512m"  # shares 2 cores and memory with Spark and the tests


def kafka_jars(cache_dir: Path) -> list[Path]:
    return maven.resolve(
        cache_dir,
        f"kafka-{KAFKA_VERSION}",
        [
            f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
            f"org.apache.logging.log4j:log4j-api:{LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
        ],
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("Java 17+ is not installed; install it with: apt-get install openjdk-17-jre-headless")
    return java


def _sasl_properties(sasl_users: Mapping[str, str]) -> list[str]:
    """A SASL_PLAINTEXT listener accepting ``sasl_users`` (name -> password) with PLAIN and SCRAM-SHA-256/512 (the
    SCRAM credentials are written by ``format``)."""
    # JAAS-quoted, then escaped again for the properties file (which reads a backslash as an escape too).
    users = " ".join(f"user_{name}={jaas_quoted(password)}" for name, password in sasl_users.items()).replace(
        "\\", "\\\\")
    return [
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]


def _properties(data_dir: Path, port: int, controller_port: int, sasl_port: int | None = None,
                sasl_users: Mapping[str, str] | None = None) -> str:
    sasl = f",SASL_PLAINTEXT://127.0.0.1:{sasl_port}" if sasl_port else ""
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        "controller.listener.names=CONTROLLER",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{sasl}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        + (",SASL_PLAINTEXT:SASL_PLAINTEXT" if sasl else ""),
        "inter.broker.listener.name=PLAINTEXT",
        *(_sasl_properties(sasl_users or {}) if sasl else []),
        f"log.dirs={data_dir / 'logs'}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=-1",  # a throwaway broker: keep everything, tests replay from offset 0
        "",
    ])


def _log4j(data_dir: Path) -> Path:
    path = data_dir / "log4j2.properties"
    path.write_text("\n".join([
        "rootLogger.level=INFO",
        "rootLogger.appenderRef.stdout.ref=STDOUT",
        "appender.stdout.type=Console",
        "appender.stdout.name=STDOUT",
        "appender.stdout.layout.type=PatternLayout",
        "appender.stdout.layout.pattern=[%d] %p %m (%c)%n",
        "logger.kafka.name=kafka",
        "logger.kafka.level=WARN",
        "logger.server.name=kafka.server.KafkaRaftServer",
        "logger.server.level=INFO",
        "logger.org.name=org.apache.kafka",
        "logger.org.level=WARN",
        "",
    ]))
    return path


def metadata_ok(bootstrap: str, options: Mapping[str, Any] | None = None) -> bool:
    """A real protocol call: a metadata request answered by the broker (``options``: security settings)."""
    from kafka import KafkaConsumer  # local import: only the services layer needs it here

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=3000, **(options or {}))
    try:
        consumer.topics()
        return True
    finally:
        consumer.close()


def format_arguments(cluster_id: str, props: Path, sasl_users: Mapping[str, str] | None = None) -> list[str]:
    """``StorageTool`` arguments that format the storage (with SCRAM credentials for ``sasl_users``).

    ``--cluster-id=ID`` in one argument: one random id in 64 begins with "-", which as a separate argument reads as
    an option (the start then failed with "argument --cluster-id/-t: expected one argument")."""
    scram = [arg for name, password in (sasl_users or {}).items() for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
             for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]
    return ["format", f"--cluster-id={cluster_id}", "-c", str(props), *scram]


def start(cache_dir: Path, data_dir: Path, sasl_users: Mapping[str, str] | None = None) -> dict[str, object]:
    """Start a broker; ``sasl_users`` (tests of the security settings) adds a SASL_PLAINTEXT listener for them,
    reported as ``sasl_bootstrap``."""
    java = _java()
    jars = kafka_jars(cache_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port, controller_port = procs.free_port(), procs.free_port()
    sasl_port = procs.free_port() if sasl_users else None
    props = data_dir / "server.properties"
    props.write_text(_properties(data_dir, port, controller_port, sasl_port, sasl_users))
    classpath = ":".join(str(j) for j in jars)
    base = [java, HEAP, f"-Dlog4j2.configurationFile={_log4j(data_dir)}", "-cp", classpath]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [*base, "kafka.tools.StorageTool", *format_arguments(cluster_id, props, sasl_users)],
        capture_output=True, text=True, check=False,
    )
    if fmt.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed: {(fmt.stdout + fmt.stderr).strip()[-300:]}")
    log = data_dir / "kafka.log"
    pid = procs.spawn([*base, "kafka.Kafka", str(props)], log)
    bootstrap = f"127.0.0.1:{port}"
    # Wait for the port first: kafka-python backs off for seconds after a refused connection.
    with procs.stopped_on_failure(pid):
        identity = procs.identity(pid)
        procs.wait_for(lambda: procs.port_open(port), pid=pid, what="Kafka", log_path=log, timeout_s=90)
        procs.wait_for(lambda: metadata_ok(bootstrap), pid=pid, what="Kafka", log_path=log, timeout_s=60)
    return {"pid": pid, "identity": identity, "bootstrap": bootstrap, "controller_port": controller_port,
            "data_dir": str(data_dir), "log": str(log), "version": KAFKA_VERSION,
            **({"sasl_bootstrap": f"127.0.0.1:{sasl_port}"} if sasl_port else {})}
