"""The schema: created and evolved here, as the schema owner's account (ADR-10); the job's account may only
SELECT, INSERT, UPDATE and DELETE."""

from __future__ import annotations

import logging
from typing import Any

import pymysql

from pipeline.adapters.mysql.connection import connect
from pipeline.errors import ConfigError, ServiceError
from pipeline.settings import MysqlUrl

log = logging.getLogger(__name__)

# Each entry migrates the schema from version i to i + 1. Append, never edit: deployed databases hold the number.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS moving_averages (
            symbol VARCHAR(20) NOT NULL,
            start_time DATETIME NOT NULL COMMENT 'UTC, window start (inclusive)',
            end_time DATETIME NOT NULL COMMENT 'UTC, window end (exclusive)',
            average_price DECIMAL(38,18) NOT NULL COMMENT 'mean of aggTrade prices',
            open_price DECIMAL(18,8) NOT NULL,
            high_price DECIMAL(18,8) NOT NULL,
            low_price DECIMAL(18,8) NOT NULL,
            close_price DECIMAL(18,8) NOT NULL,
            volume DECIMAL(38,8) NOT NULL,
            quote_volume DECIMAL(38,16) NOT NULL,
            vwap DECIMAL(38,18) NOT NULL,
            trade_count BIGINT NOT NULL,
            agg_trade_count BIGINT NOT NULL,
            is_final TINYINT(1) NOT NULL DEFAULT 0,
            updated_at DATETIME(3) NOT NULL COMMENT 'UTC',
            PRIMARY KEY (symbol, start_time),
            KEY by_start_time (start_time),
            KEY by_final (is_final, end_time)
        )""",
        """CREATE TABLE IF NOT EXISTS quarantine (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            topic VARCHAR(249) NOT NULL,
            kafka_partition INT NOT NULL,
            kafka_offset BIGINT NOT NULL,
            kafka_timestamp DATETIME(3) NULL,
            reason VARCHAR(255) NOT NULL,
            raw_value MEDIUMTEXT NULL,
            received_at DATETIME(3) NOT NULL,
            UNIQUE KEY by_position (topic, kafka_partition, kafka_offset)
        )""",
        """CREATE TABLE IF NOT EXISTS pipeline_batches (
            run_id CHAR(36) NOT NULL,
            query_name VARCHAR(32) NOT NULL,
            batch_id BIGINT NOT NULL,
            max_event_ms BIGINT NULL,
            watermark_ms BIGINT NULL,
            rows_written INT NOT NULL,
            rows_finalized INT NOT NULL,
            final_rows_refused INT NOT NULL,
            applied_at DATETIME(3) NOT NULL,
            PRIMARY KEY (run_id, query_name, batch_id)
        )""",
    ),
    (
        # ADR-9: the window state lives here, not in Spark. Rows written by schema 1 have NULL state and are
        # treated as closed (they cannot be merged exactly).
        """ALTER TABLE moving_averages
            ADD COLUMN price_sum DECIMAL(38,8) NULL COMMENT 'exact sum of aggTrade prices (merge state)',
            ADD COLUMN agg_id_ranges MEDIUMTEXT NULL COMMENT 'agg ids counted, as first-last ranges (dedup state)',
            ADD COLUMN late_trade_count BIGINT NOT NULL DEFAULT 0
                COMMENT 'aggTrades that arrived after the window was final: not in its numbers, kept in quarantine'""",
        """CREATE TABLE IF NOT EXISTS pipeline_coverage (
            symbol VARCHAR(20) NOT NULL,
            first_ms BIGINT NOT NULL COMMENT 'every trade with first_ms <= T <= last_ms is published',
            last_ms BIGINT NOT NULL,
            PRIMARY KEY (symbol, first_ms)
        )""",
        """ALTER TABLE pipeline_batches
            ADD COLUMN trades_merged BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN duplicates BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN late_trades BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0""",
    ),
    (
        # A batch is known by what it read, not by (run id, batch id): a deleted, restored or remote
        # checkpoint reuses batch ids for other offsets, and a recreated topic reuses offsets for other messages.
        """ALTER TABLE pipeline_batches
            DROP PRIMARY KEY,
            ADD COLUMN id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST,
            ADD COLUMN fingerprint CHAR(64) NULL COMMENT 'sha256 of the offsets and contents the batch read',
            ADD COLUMN offsets MEDIUMTEXT NULL COMMENT 'topic/partition:first-last offsets read',
            ADD UNIQUE KEY by_fingerprint (query_name, fingerprint),
            ADD KEY by_run (run_id, query_name, batch_id)""",
        # A quarantined message is known by its position *and* its content (a recreated topic reuses positions);
        # utf8mb4 whatever the server's default, so any text Kafka carried can be kept.
        """ALTER TABLE quarantine
            CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
            ADD COLUMN digest CHAR(64) NOT NULL DEFAULT '' COMMENT 'sha256 of the Kafka timestamp and raw value',
            DROP INDEX by_position,
            ADD UNIQUE KEY by_message (topic, kafka_partition, kafka_offset, digest)""",
    ),
    (
        # `pipeline reconcile --repair` rewrites a final window from the exchange's trades; each rewrite
        # is recorded with why and what the row held before.
        """CREATE TABLE IF NOT EXISTS pipeline_repairs (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            symbol VARCHAR(20) NOT NULL,
            start_time DATETIME NOT NULL,
            reason VARCHAR(1000) NOT NULL,
            row_before TEXT NULL COMMENT 'the window as it was, JSON (NULL: there was none)',
            repaired_at DATETIME(3) NOT NULL,
            KEY by_window (symbol, start_time)
        ) DEFAULT CHARACTER SET utf8mb4""",
    ),
    (
        # A late trade is known by its agg id, not by where it was read: a backfill repeated from another topic
        # brings the same late trades at other positions, and must not count them again.
        """CREATE TABLE IF NOT EXISTS pipeline_late_trades (
            symbol VARCHAR(20) NOT NULL,
            agg_id BIGINT NOT NULL,
            start_time DATETIME NOT NULL COMMENT 'UTC, the window it was late for',
            recorded_at DATETIME(3) NOT NULL,
            PRIMARY KEY (symbol, agg_id)
        )""",
    ),
)

# Accounts (ADR-10): the job writes as an account that may only SELECT, INSERT, UPDATE and DELETE; the
# schema belongs to another (PIPELINE_MYSQL_ADMIN_URL). MySQL's "access denied" family, for a statement, a table, a
# column, a database or a privilege like SUPER:
ACCESS_DENIED = frozenset({1044, 1142, 1143, 1227, 1370})
_NO_SUCH_TABLE = 1146


def schema_version(url: MysqlUrl) -> int:
    """The schema version the database holds (0: nothing created yet). Needs SELECT only."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM pipeline_schema")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except pymysql.err.MySQLError as exc:
        if exc.args and exc.args[0] == _NO_SUCH_TABLE:
            return 0
        raise ServiceError(f"reading the schema version at {url} failed: {exc.args[-1]}") from exc
    finally:
        conn.close()


def migrate_schema(url: MysqlUrl, variable: str = "PIPELINE_MYSQL_URL") -> int:
    """Create or evolve the schema to the newest version as ``url``'s account; returns it. Safe to run concurrently
    and repeatedly. The connection has no read/write timeout: an ALTER of a big table may take many minutes.

    An account that may not change the schema gets one clear line (ConfigError) naming what to run instead."""

    conn = connect(url, io_timeouts=False)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS pipeline_schema (version INT NOT NULL)")
            cur.execute("SELECT GET_LOCK('pipeline_schema', 30)")
            try:
                cur.execute("SELECT version FROM pipeline_schema")
                row = cur.fetchone()
                version = row[0] if row else 0
                if row is None:
                    cur.execute("INSERT INTO pipeline_schema (version) VALUES (0)")
                for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in statements:
                        _apply_once(cur, statement, target)
                    cur.execute("UPDATE pipeline_schema SET version = %s", (target,))
                    conn.commit()
                    log.info("schema migrated to version %d", target)
            finally:
                cur.execute("SELECT RELEASE_LOCK('pipeline_schema')")
        conn.commit()
        return len(MIGRATIONS)
    except pymysql.err.MySQLError as exc:
        conn.rollback()
        detail = exc.args[-1] if exc.args else type(exc).__name__
        if exc.args and exc.args[0] in ACCESS_DENIED:
            current = schema_version(url)
            if variable == "PIPELINE_MYSQL_ADMIN_URL":
                raise ConfigError(f"schema is at version {current}, the job needs {len(MIGRATIONS)}, and the account "
                                  f"of PIPELINE_MYSQL_ADMIN_URL ({url}) may not change it: {detail}") from exc
            raise ConfigError(f"schema is at version {current}, the job needs {len(MIGRATIONS)}: run `pipeline "
                              "migrate` with PIPELINE_MYSQL_ADMIN_URL set") from exc
        raise ServiceError(f"migrating the schema at {url} failed: {detail}") from exc
    finally:
        conn.close()


# "already exists" / "does not exist": what a DDL statement that was applied before says when run again.
_ALREADY_APPLIED = frozenset({1050, 1060, 1061, 1068, 1091})


def _apply_once(cur: Any, statement: str, target: int) -> None:
    """Run one DDL statement of a migration, or find it applied by an earlier, interrupted migration.

    A version's statements are recorded only together (DDL commits itself, statement by statement), so a migration
    killed half-way runs the applied ones again at the next start. Each statement is one ALTER or CREATE, atomic on
    MySQL 8 and MariaDB 10.6+ (all its clauses or none), so the error it gives when run again (duplicate column or
    key, table exists, nothing to drop) means it was applied whole."""
    try:
        cur.execute(statement)
    except (pymysql.err.OperationalError, pymysql.err.InternalError) as exc:
        if not exc.args or exc.args[0] not in _ALREADY_APPLIED:
            raise
        log.warning("schema version %d: a statement was applied by an interrupted migration (%s); going on",
                    target, exc.args[-1])


def ensure_schema(url: MysqlUrl, admin: MysqlUrl | None = None) -> int:
    """What ``pipeline process`` does on start: nothing if the schema is current; else migrate it as ``admin`` if
    given, else as the writer ``url`` (one account with every right still works); a writer that may not change the
    schema stops the job with one clear line (ConfigError, exit 2). Returns the schema version."""
    version = schema_version(url)
    if version >= len(MIGRATIONS):
        return version
    if admin is not None:
        return migrate_schema(admin, "PIPELINE_MYSQL_ADMIN_URL")
    return migrate_schema(url, "PIPELINE_MYSQL_URL")
