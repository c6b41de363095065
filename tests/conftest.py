"""Shared fixtures: real services through the same services layer the CLI uses.

One stack per test session (external when both PIPELINE_* connection variables are set, otherwise started in a
throwaway state directory and stopped at the end); each test gets its own topic and database.

Accounts as in production (ADR-10): each test's database is created, and its schema migrated, by the schema owner
(PIPELINE_MYSQL_ADMIN_URL; with external services that set none, the one account of PIPELINE_MYSQL_URL); the code
under test gets the writer's URL (``mysql_url``), which may only SELECT, INSERT, UPDATE and DELETE.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from pipeline.settings import MysqlUrl, Settings

# No per-example deadline: on a loaded 2-core CI machine a slow example is not a failure. In CI the examples are
# derandomized, so a red run can be reproduced exactly.
hypothesis_settings.register_profile("default", deadline=None)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    env = dict(os.environ)
    state_dir = tmp_path_factory.mktemp("stack")
    env.setdefault("PIPELINE_STATE_DIR", str(state_dir))
    env["PIPELINE_STATE_DIR"] = str(state_dir)
    yield Settings.from_mapping(env)


@pytest.fixture(scope="session")
def services(stack_settings: Settings) -> Iterator[Settings]:
    """Settings whose kafka_bootstrap and mysql_url point at a real, running Kafka and MySQL."""
    from pipeline.services import stack

    conns, started = stack.up(stack_settings)
    try:
        yield stack_settings.with_connections(conns.kafka_bootstrap, conns.mysql_url, conns.mysql_admin_url,
                                              conns.mysql_read_url)
    finally:
        if started:
            stack.down(stack_settings)


SASL_USER, SASL_PASSWORD = "pipeline-sasl", 'pa"ss\\word with spaces'  # quoting and escaping must survive


@pytest.fixture(scope="session")
def sasl_kafka(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second local broker whose SASL_PLAINTEXT listener accepts SASL_USER with PLAIN, SCRAM-SHA-256 and
    SCRAM-SHA-512; its bootstrap address. Started only for the tests that ask for it."""
    from pipeline.services import kafka_process, procs

    service = kafka_process.start(stack_settings.cache_dir, tmp_path_factory.mktemp("kafka-sasl"),
                                  sasl_users={SASL_USER: SASL_PASSWORD})
    try:
        yield str(service["sasl_bootstrap"])
    finally:
        procs.stop(int(str(service["pid"])))


def sasl_env(mechanism: str, password: str = SASL_PASSWORD) -> dict[str, str]:
    """The PIPELINE_KAFKA_* settings that log in to ``sasl_kafka``."""
    return {"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PIPELINE_KAFKA_SASL_MECHANISM": mechanism,
            "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": SASL_USER, "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": password}


@pytest.fixture
def topic() -> str:
    return f"test.trades.{uuid.uuid4().hex[:12]}"


def admin_url(services: Settings) -> MysqlUrl:
    """The schema owner's account (the writer's, with external services that name no PIPELINE_MYSQL_ADMIN_URL)."""
    url = services.mysql_admin_url or services.mysql_url
    assert url is not None
    return url


@contextmanager
def throwaway_database(services: Settings, migrated: bool) -> Iterator[str]:
    """A fresh database created by the schema owner (with the newest schema if ``migrated``), dropped afterwards."""
    import pymysql

    from pipeline.adapters.mysql import migrations

    admin = admin_url(services)
    name = f"pipeline_t{uuid.uuid4().hex[:12]}"
    with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        if migrated:
            migrations.migrate_schema(admin.with_database(name), "PIPELINE_MYSQL_ADMIN_URL")
        yield name
    finally:
        with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, \
                conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def database(services: Settings) -> Iterator[str]:
    """The name of this test's database: fresh, with the newest schema (created by the schema owner)."""
    with throwaway_database(services, migrated=True) as name:
        yield name


@pytest.fixture
def unmigrated_database(services: Settings) -> Iterator[str]:
    """The name of a fresh, empty database (no tables at all), created by the schema owner."""
    with throwaway_database(services, migrated=False) as name:
        yield name


@pytest.fixture
def mysql_url(services: Settings, database: str) -> MysqlUrl:
    """The writer's URL (SELECT, INSERT, UPDATE, DELETE only) on this test's database."""
    assert services.mysql_url is not None
    return services.mysql_url.with_database(database)


@pytest.fixture
def mysql_admin_url(services: Settings, database: str) -> MysqlUrl:
    """The schema owner's URL on this test's database."""
    return admin_url(services).with_database(database)


@pytest.fixture
def mysql_read_url(services: Settings, database: str) -> MysqlUrl:
    """The read-only account's URL on this test's database (the writer's, with external services that name none)."""
    url = services.read_url()
    assert url is not None
    return url.with_database(database)


@pytest.fixture
def settings_for(services: Settings, topic: str, mysql_url: MysqlUrl, mysql_admin_url: MysqlUrl,
                 mysql_read_url: MysqlUrl, tmp_path: Path) -> Settings:
    """Settings isolated to this test: its own topic, database (every account pointed at it) and checkpoint."""
    import dataclasses

    return dataclasses.replace(services, topic=topic, mysql_url=mysql_url, mysql_admin_url=mysql_admin_url,
                               mysql_read_url=mysql_read_url, checkpoint_dir=tmp_path / "checkpoint")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m integration` and friends select what the folders say."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for folder in ("unit", "integration", "streaming", "faults"):
            if folder in parts:
                item.add_marker(getattr(pytest.mark, folder))
