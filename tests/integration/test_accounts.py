"""Least privilege against the real MariaDB (issue 10, ADR-10): what each account may do, and the schema policy of
`pipeline process` / `pipeline migrate` with split accounts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pymysql
import pytest

from pipeline.adapters.mysql import connection, migrations, reads
from pipeline.core.trades import invalid_reason
from pipeline.errors import ConfigError
from pipeline.settings import MysqlUrl, Settings
from tests import cli_helpers
from tests.integration.test_reconcile import MINUTES, SYMBOL, _iso, _write_final, exchange  # noqa: F401 - fixture
from tests.sim_binance import SimBinance

DENIED = migrations.ACCESS_DENIED | {1045}  # 1045: a GRANT beyond one's rights is refused as "access denied"


def _refused(url: MysqlUrl, *statements: str) -> None:
    with pymysql.connect(**url.connect_arguments(), autocommit=True) as conn, conn.cursor() as cur:
        for statement in statements:
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(statement)
            assert info.value.args[0] in DENIED, (statement, info.value)


def _tables(url: MysqlUrl) -> set[str]:
    with pymysql.connect(**url.connect_arguments()) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        return {row[0] for row in cur.fetchall()}


def test_the_writer_can_write_rows_but_not_change_the_schema(services: Settings, mysql_url: MysqlUrl) -> None:
    if services.mysql_admin_url is None:
        pytest.skip("external services with a single account")
    with pymysql.connect(**mysql_url.connect_arguments(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO pipeline_coverage (symbol, first_ms, last_ms) VALUES ('BTCUSDT', 1, 2)")
        cur.execute("UPDATE pipeline_coverage SET last_ms = 3 WHERE symbol = 'BTCUSDT'")
        cur.execute("DELETE FROM pipeline_coverage WHERE symbol = 'BTCUSDT'")
        cur.execute("SELECT GET_LOCK('pipeline_test', 1)")  # what the job's locks need: no grant
        assert cur.fetchone() == (1,)
    _refused(mysql_url,
             "CREATE TABLE sneaky (k INT)",
             "ALTER TABLE moving_averages ADD COLUMN sneaky INT",
             "CREATE INDEX sneaky ON moving_averages (updated_at)",
             "DROP TABLE moving_averages",
             "TRUNCATE TABLE quarantine",
             f"DROP DATABASE `{mysql_url.database}`",
             "CREATE DATABASE pipeline_sneaky",
             "GRANT SELECT ON *.* TO 'pipeline_reader'@'127.0.0.1'")
    assert "moving_averages" in _tables(mysql_url)


def test_the_reader_can_only_read(services: Settings, mysql_read_url: MysqlUrl) -> None:
    if services.mysql_read_url is None:
        pytest.skip("external services without PIPELINE_MYSQL_READ_URL")
    assert mysql_read_url.user != (services.mysql_url.user if services.mysql_url else None)
    with pymysql.connect(**mysql_read_url.connect_arguments()) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM moving_averages")
        assert cur.fetchone() == (0,)
    _refused(mysql_read_url,
             "INSERT INTO pipeline_coverage (symbol, first_ms, last_ms) VALUES ('BTCUSDT', 1, 2)",
             "UPDATE moving_averages SET is_final = 0",
             "DELETE FROM quarantine",
             "CREATE TABLE sneaky (k INT)",
             "DROP TABLE moving_averages")
    assert reads.read_windows(mysql_read_url) == []  # what `pipeline report` does


def test_a_writer_only_process_on_an_unmigrated_database_is_one_clear_line(
        services: Settings, settings_for: Settings, unmigrated_database: str) -> None:
    if services.mysql_admin_url is None:
        pytest.skip("external services with a single account")
    assert services.mysql_url is not None
    writer = services.mysql_url.with_database(unmigrated_database)
    expected = (f"schema is at version 0, the job needs {len(migrations.MIGRATIONS)}: run `pipeline migrate` "
                "with PIPELINE_MYSQL_ADMIN_URL set")
    with pytest.raises(ConfigError) as info:
        migrations.ensure_schema(writer)
    assert str(info.value) == expected
    assert _tables(writer) == set()  # refused before anything was created

    env = cli_helpers.env_for(settings_for, PIPELINE_MYSQL_URL=writer.render())
    result = cli_helpers.run(["process", "--until-idle"], env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"pipeline: error: {expected}"
    assert "Traceback" not in result.stderr and writer.password not in result.stderr


def test_migrate_with_the_admin_account_then_the_writer_runs(services: Settings, settings_for: Settings,
                                                             unmigrated_database: str) -> None:
    assert services.mysql_url is not None
    admin = (services.mysql_admin_url or services.mysql_url).with_database(unmigrated_database)
    writer = services.mysql_url.with_database(unmigrated_database)
    env = cli_helpers.env_for(settings_for, PIPELINE_MYSQL_URL=writer.render(),
                              PIPELINE_MYSQL_ADMIN_URL=admin.render())
    first = cli_helpers.run(["migrate"], env, timeout=120)
    newest = len(migrations.MIGRATIONS)
    assert first.returncode == 0, first.stderr
    assert f"schema at version {newest} (migrated from version 0)" in first.stdout
    assert admin.password not in first.stdout + first.stderr
    again = cli_helpers.run(["migrate"], env, timeout=120)
    assert again.returncode == 0 and "(already current)" in again.stdout
    # What `pipeline process` does on start, as the writer alone: the schema is current, nothing to do.
    assert migrations.ensure_schema(writer) == newest
    assert {"moving_averages", "pipeline_coverage", "quarantine", "pipeline_batches"} <= _tables(writer)


def test_process_migrates_with_the_admin_account_when_given(services: Settings, unmigrated_database: str) -> None:
    assert services.mysql_url is not None
    admin = (services.mysql_admin_url or services.mysql_url).with_database(unmigrated_database)
    writer = services.mysql_url.with_database(unmigrated_database)
    assert migrations.ensure_schema(writer, admin) == len(migrations.MIGRATIONS)
    assert migrations.schema_version(writer) == len(migrations.MIGRATIONS)


def test_one_account_with_every_right_still_migrates_on_start(services: Settings, unmigrated_database: str) -> None:
    assert services.mysql_url is not None
    everything = (services.mysql_admin_url or services.mysql_url).with_database(unmigrated_database)
    assert migrations.ensure_schema(everything) == len(migrations.MIGRATIONS)  # as before the split


def test_migrate_without_an_admin_account_says_what_to_do(services: Settings, settings_for: Settings,
                                                          unmigrated_database: str) -> None:
    if services.mysql_admin_url is None:
        pytest.skip("external services with a single account")
    assert services.mysql_url is not None
    env = cli_helpers.env_for(settings_for, PIPELINE_MYSQL_URL=services.mysql_url.with_database(
        unmigrated_database).render())
    result = cli_helpers.run(["migrate"], env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "PIPELINE_MYSQL_ADMIN_URL" in result.stderr


def test_a_migration_is_not_cut_by_the_io_timeout(monkeypatch: pytest.MonkeyPatch, services: Settings,
                                                  unmigrated_database: str) -> None:
    """An ALTER of a big table can outlast IO_TIMEOUT_SECONDS; a SLEEP longer than the timeout stands in for it."""
    assert services.mysql_url is not None
    admin = (services.mysql_admin_url or services.mysql_url).with_database(unmigrated_database)
    monkeypatch.setattr(connection, "IO_TIMEOUT_SECONDS", 1)
    conn = connection.connect(admin)  # an ordinary connection is cut ...
    with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
        cur.execute("SELECT SLEEP(2)")
    conn.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, ("SELECT SLEEP(2)",)))
    assert migrations.migrate_schema(admin) == len(migrations.MIGRATIONS)  # ... a migration's is not
    assert migrations.schema_version(admin) == len(migrations.MIGRATIONS)


def test_report_status_and_reconcile_log_in_only_as_the_reader(
        settings_for: Settings, exchange: tuple[SimBinance, str, int, int], tmp_path: Path) -> None:  # noqa: F811
    """The commands that only read must work with nothing but the read-only account: the writer's password is
    wrong here, so any login as the writer fails the command (``status`` said MySQL was down before its health
    check used the reader)."""
    if settings_for.mysql_read_url is None or settings_for.mysql_url is None:
        pytest.skip("external services without PIPELINE_MYSQL_READ_URL")
    sim, base_url, start_ms, end_ms = exchange
    env = cli_helpers.env_for(settings_for)
    env["PIPELINE_MYSQL_URL"] = dataclasses.replace(settings_for.mysql_url, password="not-the-password").render()
    env["PIPELINE_MYSQL_READ_URL"] = settings_for.mysql_read_url.render()
    denied = cli_helpers.run(["migrate"], env, timeout=120)
    assert denied.returncode != 0  # the writer's login really fails
    reconcile = ["reconcile", "--symbol", SYMBOL, "--since", _iso(start_ms), "--until", _iso(end_ms),
                 "--base-url", base_url]
    empty = cli_helpers.run(reconcile, env, timeout=120)  # the exchange serves (and so has) its trades from now on
    assert empty.returncode == 1 and f"{MINUTES} missing in table" in empty.stdout, empty.stdout + empty.stderr
    trades = [t for t in sim.served_trades(SYMBOL)
              if invalid_reason(t) is None and start_ms <= t.event_time_ms < end_ms]
    _write_final(settings_for.mysql_url, trades)

    shown = cli_helpers.run(["report", "--symbol", SYMBOL, "--out-dir", str(tmp_path)], env, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert (tmp_path / "moving_averages.html").exists()
    status = cli_helpers.run(["status", "--json"], env, timeout=120)
    services = {s["name"]: s for s in json.loads(status.stdout)["services"]}
    assert services["mysql"]["ok"], status.stdout
    checked = cli_helpers.run(reconcile, env, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{MINUTES} match" in checked.stdout
