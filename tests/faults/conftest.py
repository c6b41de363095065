"""Fixtures of the fault-injection suite: its own Kafka broker and MariaDB server (killing the session stack would
break every other test), a topic, database and checkpoint per test, and a one-line summary per scenario.

The summary lines are printed at the end of the run and written to ``<pytest's base temp>/faults-summary.json``
(or to ``$PIPELINE_FAULTS_SUMMARY``): docs/TESTING.md quotes them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from pipeline.adapters.mysql import migrations
from pipeline.services import kafka_process, mysql_process
from pipeline.settings import MysqlUrl, Settings
from tests.faults.daemons import Daemon

_SUMMARY = pytest.StashKey[list[dict[str, Any]]]()


@dataclasses.dataclass
class FaultStack:
    kafka: Daemon
    mysql: Daemon
    bootstrap: str
    writer: MysqlUrl  # the job's account
    admin: MysqlUrl  # the schema owner (creates the per-test databases); the writer on a one-account server


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUMMARY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if not lines:
        return
    terminalreporter.section("fault injection")
    for entry in lines:
        terminalreporter.write_line(entry["line"])


@pytest.fixture(scope="session")
def fault_summary(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[list[dict[str, Any]]]:
    """Scenarios append their figures here (``tests.faults.scenario.Figures.record``)."""
    entries = request.config.stash[_SUMMARY]
    yield entries
    path = Path(os.environ.get("PIPELINE_FAULTS_SUMMARY") or tmp_path_factory.getbasetemp() / "faults-summary.json")
    path.write_text(json.dumps(entries, indent=2, default=str))
    if entries:
        entries.append({"line": f"(figures written to {path})"})


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """A Kafka broker and a MariaDB server of this suite's own, started like `pipeline stack up` starts them."""
    root = tmp_path_factory.mktemp("fault-stack")
    cache_dir = Settings.from_mapping(os.environ).cache_dir
    started: list[Daemon] = []
    try:
        kafka_info = kafka_process.start(cache_dir, root / "kafka")
        bootstrap = str(kafka_info["bootstrap"])
        kafka = Daemon.adopt("Kafka", int(str(kafka_info["pid"])), Path(str(kafka_info["log"])),
                             lambda: kafka_process.metadata_ok(bootstrap), int(bootstrap.rsplit(":", 1)[1]))
        started.append(kafka)
        mysql_info = mysql_process.start(root / "mysql")
        writer = MysqlUrl.parse(str(mysql_info["url"]))
        admin = MysqlUrl.parse(str(mysql_info.get("admin_url") or mysql_info["url"]))
        mysql = Daemon.adopt("MySQL", int(str(mysql_info["pid"])), Path(str(mysql_info["log"])),
                             lambda: mysql_process.ping(writer), writer.port)
        started.append(mysql)
        yield FaultStack(kafka, mysql, bootstrap, writer, admin)
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture
def fault_settings(fault_stack: FaultStack, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated to one scenario: its own topic, database (schema created by its owner) and checkpoint."""
    name = f"pipeline_f{uuid.uuid4().hex[:12]}"
    admin = fault_stack.admin
    with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    migrations.migrate_schema(admin.with_database(name), "PIPELINE_MYSQL_ADMIN_URL")
    base = Settings.from_mapping({"PIPELINE_CACHE_DIR": str(Settings.from_mapping(os.environ).cache_dir),
                                  "PIPELINE_STATE_DIR": str(tmp_path / "state")})
    settings = dataclasses.replace(base, kafka_bootstrap=fault_stack.bootstrap,
                                   mysql_url=fault_stack.writer.with_database(name),
                                   mysql_admin_url=admin.with_database(name),
                                   topic=f"faults.{name}", checkpoint_dir=tmp_path / "checkpoint")
    try:
        yield settings
    finally:
        for daemon in (fault_stack.kafka, fault_stack.mysql):  # a failed scenario must not leave them down
            daemon.recover()
        with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, \
                conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
