"""``pipeline process`` SIGKILLed in the middle of the schema migration it runs on start (an upgrade: the database
holds the previous release's schema), then started again: it must finish the migration and converge exactly.

A random kill point hits the migration only by luck (it lasts about 0.2 s), so the point is made exact: the test
holds a metadata lock on the table that the last statement of a multi-statement migration alters, waits until
the processor is blocked on it (the earlier statements of that version done, its version number not yet written),
kills it there, and lets go of the lock.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pymysql

from pipeline.adapters.mysql import migrations
from pipeline.settings import MysqlUrl, Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.faults.daemons import children, wait_gone
from tests.faults.scenario import Processes, tail, verdict, wait_until


def _upgrade_step() -> tuple[int, str]:
    """The newest version whose migration has several statements, the last one altering an existing table: the
    schema version to start from, and that table."""
    for index in range(len(migrations.MIGRATIONS) - 1, 0, -1):
        statements = migrations.MIGRATIONS[index]
        found = re.match(r"\s*ALTER TABLE\s+`?(\w+)`?", statements[-1])
        if len(statements) > 1 and found:
            return index, found.group(1)
    raise AssertionError("no migration with several statements ending in an ALTER TABLE")


def _previous_release(admin: MysqlUrl, version: int) -> None:
    """The schema as an older release left it: the first ``version`` migrations applied."""
    with pymysql.connect(**admin.connect_arguments(), autocommit=True) as conn, conn.cursor() as cur:
        for name in ("moving_averages", "quarantine", "pipeline_batches", "pipeline_coverage", "pipeline_schema"):
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        cur.execute("CREATE TABLE pipeline_schema (version INT NOT NULL)")
        for statements in migrations.MIGRATIONS[:version]:
            for statement in statements:
                cur.execute(statement)
        cur.execute("INSERT INTO pipeline_schema (version) VALUES (%s)", (version,))


def _blocked_on(admin: MysqlUrl, table: str) -> bool:
    with pymysql.connect(**admin.connect_arguments(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE state LIKE %s AND info LIKE %s",
                    ("%metadata lock%", f"%ALTER TABLE {table}%"))
        return bool(cur.fetchone()[0])


def test_processor_killed_mid_migration_converges(fault_settings: Settings, tmp_path: Path,
                                                  fault_summary: list[dict[str, Any]]) -> None:
    url, admin = fault_settings.mysql_url, fault_settings.mysql_admin_url
    assert url is not None and admin is not None
    started = time.monotonic()
    version, table = _upgrade_step()
    _previous_release(admin, version)
    trades = synthetic_trades("BNBUSDT", 1_740_787_200_000, 500, seed=7, spacing_ms=1_000)
    env = env_for(fault_settings, PIPELINE_MYSQL_ADMIN_URL=admin.render())
    run = Processes(tmp_path)
    holder = pymysql.connect(**admin.connect_arguments(), autocommit=False)
    try:
        archive = write_archive(tmp_path, "BNBUSDT", "2025-03-01", trades, zipped=True, checksum=True)
        run.start("replay", ["replay", "--source", str(archive)], env)
        assert run.wait("replay", 120) == 0, tail(run.log("replay"))
        with holder.cursor() as cur:  # a reader's open transaction: ALTER TABLE must wait for it
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
        proc = run.start("process", ["process", "--until-idle"], env)
        wait_until(lambda: _blocked_on(admin, table), 120, f"the migration blocked on ALTER TABLE {table}",
                   lambda: run.check_alive("process"), 0.1)
        jvm = children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        wait_gone(jvm, 60)
        holder.rollback()
        left = migrations.schema_version(url)
        run.start("again", ["process", "--until-idle"], env)
        code = run.wait("again", 400)
        assert code == 0, (f"killed mid-migration at schema version {left} (migrating to {version + 1}), the "
                           f"processor does not start again:\n{tail(run.log('again'))}")
    finally:
        holder.close()
        run.kill_all()
    assert migrations.schema_version(url) == len(migrations.MIGRATIONS)
    verdict("processor SIGKILL mid-migration", url, trades, faults=1, started=started,
            detail=f"upgrade from schema {version}, killed while ALTER TABLE {table} waited; restarted",
            summary=fault_summary, bootstrap=fault_settings.kafka_bootstrap, topic=fault_settings.topic)
