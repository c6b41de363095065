"""MySQL adapter: the schema (created and evolved here), window upserts with a ledger, quarantine, reads.

Each micro-batch is applied in one transaction together with a row in ``pipeline_batches`` keyed by
(run id, query, batch id): a batch that Spark re-executes after a crash finds its ledger row and changes nothing.
A row with ``is_final = 1`` is never rewritten: the upsert skips final rows (and counts what it refused).
Works on MySQL 8 and MariaDB (``VALUES(c)`` in ``ON DUPLICATE KEY UPDATE``: the form both accept, and the one
PyMySQL's ``executemany`` turns into a single multi-row statement).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pymysql

from pipeline.core.windows import WindowRow, is_final
from pipeline.errors import ServiceError
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
)

WINDOW_COLUMNS = ("symbol", "start_time", "end_time", "average_price", "open_price", "high_price", "low_price",
                  "close_price", "volume", "quote_volume", "vwap", "trade_count", "agg_trade_count", "is_final",
                  "updated_at")
_VALUE_COLUMNS = WINDOW_COLUMNS[2:-2]
UPSERT = (
    f"INSERT INTO moving_averages ({', '.join(WINDOW_COLUMNS)}) VALUES ({', '.join(['%s'] * len(WINDOW_COLUMNS))})"
    " ON DUPLICATE KEY UPDATE "
    # MySQL assigns left to right and later assignments see earlier ones: is_final must come last.
    + ", ".join(f"{c} = IF(is_final = 1, {c}, VALUES({c}))" for c in (*_VALUE_COLUMNS, "updated_at"))
    + ", is_final = IF(is_final = 1, 1, VALUES(is_final))"
)


def utc(ms: int) -> datetime:
    """Epoch ms -> naive UTC datetime (what DATETIME columns hold; the session time zone is UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def connect(url: MysqlUrl, database: bool = True) -> pymysql.connections.Connection:
    try:
        return pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                               database=url.database if database else None, autocommit=False,
                               connect_timeout=10, init_command="SET time_zone = '+00:00'")
    except pymysql.err.OperationalError as exc:
        raise ServiceError(f"MySQL at {url} is unreachable or refused the login: {exc.args[-1]}") from exc


@contextmanager
def transaction(url: MysqlUrl) -> Iterator[Any]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def migrate(url: MysqlUrl) -> int:
    """Create or evolve the schema to the newest version; returns it. Safe to run concurrently and repeatedly."""
    with transaction(url) as cur:
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
                    cur.execute(statement)
                cur.execute("UPDATE pipeline_schema SET version = %s", (target,))
                log.info("schema migrated to version %d", target)
            return len(MIGRATIONS)
        finally:
            cur.execute("SELECT RELEASE_LOCK('pipeline_schema')")


@dataclasses.dataclass(frozen=True)
class BatchResult:
    applied: bool  # False: the ledger already had this batch (a re-execution), nothing changed
    rows_written: int = 0
    rows_finalized: int = 0  # rows that became final in this batch: written final, or closed by the watermark
    final_rows_refused: int = 0


def _window_params(row: WindowRow, final: bool, now: datetime) -> tuple[Any, ...]:
    return (row.symbol, utc(row.start_ms), utc(row.end_ms), row.average_price, row.open_price, row.high_price,
            row.low_price, row.close_price, row.volume, row.quote_volume, row.vwap, row.trade_count,
            row.agg_trade_count, int(final), now)


def apply_windows(url: MysqlUrl, run_id: str, batch_id: int, rows: Sequence[WindowRow], max_event_ms: int | None,
                  watermark_ms: int | None) -> BatchResult:
    """Upsert a batch's windows and finalize every window ending at or before ``watermark_ms``, atomically."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with transaction(url) as cur:
        cur.execute("SELECT 1 FROM pipeline_batches WHERE run_id = %s AND query_name = 'windows' AND batch_id = %s"
                    " FOR UPDATE", (run_id, batch_id))
        if cur.fetchone():
            return BatchResult(applied=False)
        refused = written_final = 0
        if rows:
            keys = [(r.symbol, utc(r.start_ms)) for r in rows]
            placeholders = ", ".join(["(%s, %s)"] * len(keys))
            cur.execute(f"SELECT symbol, start_time FROM moving_averages WHERE is_final = 1 AND (symbol, start_time)"
                        f" IN ({placeholders}) FOR UPDATE", [v for k in keys for v in k])
            final_keys = {(s, t) for s, t in cur.fetchall()}
            fresh = [r for r, k in zip(rows, keys, strict=True) if k not in final_keys]
            refused = len(rows) - len(fresh)
            if refused:
                log.warning("batch %d: %d updates to final windows refused (late data, or rows an earlier "
                            "checkpoint finalized)", batch_id, refused)
            final_now = [is_final(r.end_ms, watermark_ms) for r in fresh]
            cur.executemany(UPSERT, [_window_params(r, final, now) for r, final in zip(fresh, final_now, strict=True)])
            written_final = sum(final_now)
        finalized = 0
        if watermark_ms is not None:
            finalized = cur.execute("UPDATE moving_averages SET is_final = 1, updated_at = %s "
                                    "WHERE is_final = 0 AND end_time <= %s", (now, utc(watermark_ms)))
        cur.execute("INSERT INTO pipeline_batches (run_id, query_name, batch_id, max_event_ms, watermark_ms, "
                    "rows_written, rows_finalized, final_rows_refused, applied_at) "
                    "VALUES (%s, 'windows', %s, %s, %s, %s, %s, %s, %s)",
                    (run_id, batch_id, max_event_ms, watermark_ms, len(rows) - refused, written_final + finalized,
                     refused, now))
        return BatchResult(True, len(rows) - refused, written_final + finalized, refused)


def max_event_ms(url: MysqlUrl, run_id: str) -> int | None:
    with transaction(url) as cur:
        cur.execute("SELECT MAX(max_event_ms) FROM pipeline_batches WHERE run_id = %s AND query_name = 'windows'",
                    (run_id,))
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None


@dataclasses.dataclass(frozen=True)
class QuarantinedMessage:
    topic: str
    partition: int
    offset: int
    kafka_timestamp: datetime | None
    raw_value: str | None
    reason: str


def apply_quarantine(url: MysqlUrl, run_id: str, batch_id: int, messages: Iterable[QuarantinedMessage]) -> int:
    """Keep rejected messages with their reason; idempotent by Kafka position. Returns how many were new."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with transaction(url) as cur:
        cur.execute("SELECT 1 FROM pipeline_batches WHERE run_id = %s AND query_name = 'quarantine' "
                    "AND batch_id = %s FOR UPDATE", (run_id, batch_id))
        if cur.fetchone():
            return 0
        rows = [(m.topic, m.partition, m.offset, m.kafka_timestamp, m.reason[:255], m.raw_value, now)
                for m in messages]
        added = cur.executemany(
            "INSERT IGNORE INTO quarantine (topic, kafka_partition, kafka_offset, kafka_timestamp, reason, "
            "raw_value, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows) if rows else 0
        cur.execute("INSERT INTO pipeline_batches (run_id, query_name, batch_id, rows_written, rows_finalized, "
                    "final_rows_refused, applied_at) VALUES (%s, 'quarantine', %s, %s, 0, 0, %s)",
                    (run_id, batch_id, added or 0, now))
        return int(added or 0)


def read_windows(url: MysqlUrl, symbol: str | None = None) -> list[dict[str, Any]]:
    with transaction(url) as cur:
        where, params = ("WHERE symbol = %s", (symbol,)) if symbol else ("", ())
        cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages {where} ORDER BY symbol, start_time",
                    params)
        return [dict(zip(WINDOW_COLUMNS, row, strict=True)) for row in cur.fetchall()]
