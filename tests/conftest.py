"""Shared fixtures: real services through the same services layer the CLI uses.

One stack per test session (external when both PIPELINE_* connection variables are set, otherwise started in a
throwaway state directory and stopped at the end); each test gets its own topic and database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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

    conns, started = stack.up(stack_settings, os.environ)
    try:
        yield stack_settings.with_connections(conns.kafka_bootstrap, conns.mysql_url)
    finally:
        if started:
            stack.down(stack_settings)


@pytest.fixture
def topic() -> str:
    return f"test.trades.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mysql_url(services: Settings) -> Iterator[MysqlUrl]:
    """A fresh, empty database for one test, dropped afterwards."""
    import pymysql

    assert services.mysql_url is not None
    name = f"pipeline_t{uuid.uuid4().hex[:12]}"
    url = services.mysql_url
    with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield url.with_database(name)
    finally:
        with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                             autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def settings_for(services: Settings, topic: str, mysql_url: MysqlUrl, tmp_path: Path) -> Settings:
    """Settings isolated to this test: its own topic, database and checkpoint directory."""
    import dataclasses

    return dataclasses.replace(services, topic=topic, mysql_url=mysql_url, checkpoint_dir=tmp_path / "checkpoint")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m integration` and friends select what the folders say."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for folder in ("unit", "integration", "streaming"):
            if folder in parts:
                item.add_marker(getattr(pytest.mark, folder))
