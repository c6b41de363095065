"""MySQL adapter: the schema (created and evolved here), the window state, coverage, quarantine, the ledger, reads.

Each micro-batch is applied in one transaction together with a row in ``pipeline_batches`` keyed by the
fingerprint of what the batch read (topic, partitions, offsets and contents): a batch that Spark re-executes after
a crash finds its ledger row and changes nothing, whatever became of the checkpoint's batch ids.
The functions taking a cursor are the steps of that transaction (``pipeline.spark.writer`` runs them); the numbers
a final row holds are never rewritten (the upsert keeps them; only ``late_trade_count`` may grow).
Works on MySQL 8 and MariaDB (``VALUES(c)`` in ``ON DUPLICATE KEY UPDATE``: the form both accept, and the one
PyMySQL's ``executemany`` turns into a single multi-row statement).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pymysql

from pipeline.core import coverage
from pipeline.core.coverage import Range
from pipeline.core.merging import Stored
from pipeline.core.windows import Accumulator, WindowRow
from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl

log = logging.getLogger(__name__)
T = TypeVar("T")

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
        # Issue 10: a batch is known by what it read, not by (run id, batch id): a deleted, restored or remote
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
        # Issue 13: `pipeline reconcile --repair` rewrites a final window from the exchange's trades; each rewrite
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
)

WINDOW_COLUMNS = ("symbol", "start_time", "end_time", "average_price", "open_price", "high_price", "low_price",
                  "close_price", "volume", "quote_volume", "vwap", "trade_count", "agg_trade_count", "is_final",
                  "late_trade_count", "updated_at")
_STATE_COLUMNS = ("price_sum", "agg_id_ranges")
_WRITTEN = (*WINDOW_COLUMNS[:-3], *_STATE_COLUMNS, "updated_at")
UPSERT = (
    f"INSERT INTO moving_averages ({', '.join(_WRITTEN)}) VALUES ({', '.join(['%s'] * len(_WRITTEN))})"
    " ON DUPLICATE KEY UPDATE "
    # A final row keeps its numbers whatever a (mistaken) caller sends.
    + ", ".join(f"{c} = IF(is_final = 1, {c}, VALUES({c}))" for c in (*_WRITTEN[2:],))
)
_KEY_CHUNK = 500  # keys per IN (...) lookup: statements stay far below any server's packet limit


_EPOCH = datetime(1970, 1, 1)
_DATETIME_END_MS = 253_402_300_800_000  # 10000-01-01: DATETIME (and Python) end before it


def utc(ms: int) -> datetime:
    """Epoch ms -> naive UTC datetime (what DATETIME columns hold; the session time zone is UTC). Exact: through a
    float, 253402300799999 ms came out as .998993 s."""
    return _EPOCH + timedelta(milliseconds=ms)


def utc_or_none(ms: int | None) -> datetime | None:
    """``utc`` for a time nobody validated (a Kafka timestamp, which any producer sets): None when unknown (Kafka's
    -1) or past what DATETIME holds, instead of an error that would fail the batch at every start."""
    return utc(ms) if ms is not None and 0 < ms < _DATETIME_END_MS else None


# A server that stops answering (frozen, partitioned) fails the statement after this long instead of hanging the
# job; ``transaction`` retries such failures (see RETRYABLE).
IO_TIMEOUT_SECONDS = 30


def connect(url: MysqlUrl, database: bool = True, io_timeouts: bool = True) -> pymysql.connections.Connection:
    """A connection as the URL says, TLS included (``?ssl-mode=...``: a server without TLS is refused before the
    login is sent). ``io_timeouts=False`` is for schema migrations: an ALTER of a big table may run far longer than
    IO_TIMEOUT_SECONDS without a byte on the wire, and must not be cut."""
    timeout = IO_TIMEOUT_SECONDS if io_timeouts else None
    try:
        return pymysql.connect(**url.connect_arguments(database), autocommit=False, connect_timeout=10,
                               read_timeout=timeout, write_timeout=timeout, init_command="SET time_zone = '+00:00'")
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


class Connection:
    """One connection kept open from one transaction to the next (the job's batches: a login costs about 40 ms
    here, more than a small batch's statements). Checked with a ping before each use, so a connection the server
    closed meanwhile is opened again; closed after any failure, so a retry starts afresh."""

    def __init__(self, url: MysqlUrl) -> None:
        self.url = url
        self._conn: pymysql.connections.Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.ping(reconnect=False)
            except pymysql.err.MySQLError:
                with suppress(pymysql.err.Error, OSError):
                    conn.close()
                conn = None
        conn = conn or connect(self.url)
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            finally:
                conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


# Failures that say nothing about the data: a deadlock or lock wait (the server rolled back), or a connection lost
# or refused. The whole transaction is run again; anything else (a refused login, a bad statement) is raised.
RETRYABLE = frozenset({1205, 1213, 1040, 1053, 2003, 2006, 2013, 2055})
RETRY_SECONDS = 900.0  # how long a batch keeps trying before the job stops with the cause
_DUPLICATE_KEY = 1062


def retryable(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InternalError) and exc.args \
                and exc.args[0] in RETRYABLE:
            return True
        if isinstance(exc, pymysql.err.InterfaceError | ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def with_retries(url: MysqlUrl, work: Callable[[Any], T], what: str, deadline_s: float = RETRY_SECONDS,
                 sleep: Callable[[float], None] = time.sleep, connection: Connection | None = None) -> T:
    """``work(cursor)`` in one transaction (on ``connection``, kept open, if given), run again (after a backoff of
    1 s doubling to 30 s) while MySQL fails for a reason that says nothing about the data, for at most
    ``deadline_s``; every attempt is logged. ``work`` must be repeatable: a commit whose answer was lost is found by
    the next attempt (the batch ledger)."""
    started, delay, attempt = time.monotonic(), 1.0, 1
    while True:
        try:
            with (connection.transaction() if connection is not None else transaction(url)) as cur:
                return work(cur)
        except Exception as exc:
            if not retryable(exc) or time.monotonic() - started + delay > deadline_s:
                raise
            log.warning("%s: MySQL failed (%s); attempt %d again in %.0f s", what,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, attempt + 1, delay)
            sleep(delay)
            delay, attempt = min(delay * 2, 30.0), attempt + 1


def claim_batch(cur: Any, run_id: str, query: str, batch_id: int, fingerprint: str, offsets: str) -> bool:
    """Claim the ledger slot of a batch, known by the fingerprint of what it read; False if it was applied before.

    Inserting first (not ``SELECT ... FOR UPDATE``) takes no gap lock: two writers never deadlock on the ledger, and
    a second writer of the same batch waits for the first one's commit and then finds it applied."""
    try:
        cur.execute("INSERT INTO pipeline_batches (run_id, query_name, batch_id, fingerprint, offsets, rows_written, "
                    "rows_finalized, final_rows_refused, applied_at) VALUES (%s, %s, %s, %s, %s, 0, 0, 0, %s)",
                    (run_id, query, batch_id, fingerprint, offsets, _now()))
    except pymysql.err.IntegrityError as exc:
        if exc.args[0] == _DUPLICATE_KEY:
            return False
        raise
    return True


@dataclasses.dataclass(frozen=True)
class BatchCounts:
    trades_merged: int = 0
    duplicates: int = 0
    late_trades: int = 0
    quarantined: int = 0
    rows_written: int = 0
    rows_finalized: int = 0

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other),
                                                    strict=True)))


def record_batch(cur: Any, query: str, fingerprint: str, counts: BatchCounts) -> None:
    """The figures of a batch claimed in this transaction."""
    cur.execute("UPDATE pipeline_batches SET rows_written = %s, rows_finalized = %s, trades_merged = %s, "
                "duplicates = %s, late_trades = %s, quarantined = %s, applied_at = %s "
                "WHERE query_name = %s AND fingerprint = %s",
                (counts.rows_written, counts.rows_finalized, counts.trades_merged, counts.duplicates,
                 counts.late_trades, counts.quarantined, _now(), query, fingerprint))


def run_totals(url: MysqlUrl, run_id: str) -> BatchCounts:
    """The ledger's sums for one checkpoint (a whole run, across restarts)."""
    with transaction(url) as cur:
        cur.execute("SELECT COALESCE(SUM(trades_merged), 0), COALESCE(SUM(duplicates), 0), "
                    "COALESCE(SUM(late_trades), 0), COALESCE(SUM(quarantined), 0), COALESCE(SUM(rows_written), 0), "
                    "COALESCE(SUM(rows_finalized), 0) FROM pipeline_batches WHERE run_id = %s", (run_id,))
        return BatchCounts(*(int(v) for v in cur.fetchone()))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def load_windows(cur: Any, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Stored]:
    """The stored state of these (symbol, start ms) windows, locked for the transaction."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, int], Stored] = {}
    for i in range(0, len(wanted), _KEY_CHUNK):
        chunk = wanted[i:i + _KEY_CHUNK]
        cur.execute("SELECT symbol, start_time, agg_trade_count, trade_count, price_sum, volume, quote_volume, "
                    "open_price, close_price, high_price, low_price, agg_id_ranges, is_final, late_trade_count "
                    f"FROM moving_averages WHERE (symbol, start_time) IN ({', '.join(['(%s, %s)'] * len(chunk))}) "
                    "FOR UPDATE", [v for symbol, start in chunk for v in (symbol, utc(start))])
        for row in cur.fetchall():
            key = (row[0], _ms(row[1]))
            ranges = tuple(coverage.parse(row[11]))
            if row[4] is None or not ranges:  # written by schema 1: no merge state, so it takes no more trades
                out[key] = Stored(Accumulator(), (), True, int(row[13]))
                continue
            out[key] = Stored(Accumulator(
                agg_trade_count=int(row[2]), trade_count=int(row[3]), price_sum=row[4], volume=row[5],
                quote_volume=row[6], open_id=ranges[0][0], open_price=row[7], close_id=ranges[-1][1],
                close_price=row[8], high_price=row[9], low_price=row[10]), ranges, bool(row[12]), int(row[13]))
    return out


def _ms(value: datetime) -> int:
    """``utc``'s inverse, exact (a float's ms could come out one short)."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def write_windows(cur: Any, rows: Sequence[tuple[WindowRow, Accumulator, Sequence[Range]]]) -> int:
    """Upsert open windows with their merge state (``is_final`` is the finalize step's business)."""
    now = _now()
    params = [(r.symbol, utc(r.start_ms), utc(r.end_ms), r.average_price, r.open_price, r.high_price, r.low_price,
               r.close_price, r.volume, r.quote_volume, r.vwap, r.trade_count, r.agg_trade_count, acc.price_sum,
               coverage.render(ranges), now) for r, acc, ranges in rows]
    if params:
        cur.executemany(UPSERT, params)
    return len(params)


def repair_window(cur: Any, row: WindowRow, acc: Accumulator, ranges: Sequence[Range], reason: str) -> None:
    """Replace (symbol, minute) with ``row``, final, and record why and what it held before, in the caller's
    transaction. Only a repair may rewrite a final row: the upsert never does."""
    key = (row.symbol, utc(row.start_ms))
    before = _take_window(cur, key)
    write_windows(cur, [(row, acc, ranges)])
    cur.execute("UPDATE moving_averages SET is_final = 1 WHERE symbol = %s AND start_time = %s", key)
    cur.execute("INSERT INTO pipeline_repairs (symbol, start_time, reason, row_before, repaired_at) "
                "VALUES (%s, %s, %s, %s, %s)", (*key, reason[:1000], before, _now()))


def remove_window(cur: Any, symbol: str, start_ms: int, reason: str) -> None:
    """Delete (symbol, minute), recording why and what it held, in the caller's transaction."""
    key = (symbol, utc(start_ms))
    before = _take_window(cur, key)
    cur.execute("INSERT INTO pipeline_repairs (symbol, start_time, reason, row_before, repaired_at) "
                "VALUES (%s, %s, %s, %s, %s)", (*key, reason[:1000], before, _now()))


def _take_window(cur: Any, key: tuple[str, datetime]) -> str | None:
    """The row as JSON (locked), then deleted; None if there was none."""
    import json

    cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages WHERE symbol = %s AND start_time = %s "
                "FOR UPDATE", key)
    found = cur.fetchone()
    cur.execute("DELETE FROM moving_averages WHERE symbol = %s AND start_time = %s", key)
    return None if found is None else json.dumps(dict(zip(WINDOW_COLUMNS, found, strict=True)), default=str)


def add_late(cur: Any, late: Iterable[tuple[str, int, int]]) -> None:
    """Count trades refused by closed windows on their rows (symbol, start ms, count)."""
    params = [(n, _now(), symbol, utc(start)) for symbol, start, n in late if n]
    if params:
        cur.executemany("UPDATE moving_averages SET late_trade_count = late_trade_count + %s, updated_at = %s "
                        "WHERE symbol = %s AND start_time = %s", params)


def load_coverage(cur: Any, symbols: Iterable[str]) -> dict[str, list[Range]]:
    wanted = sorted(set(symbols))
    out: dict[str, list[Range]] = {s: [] for s in wanted}
    if wanted:
        cur.execute(f"SELECT symbol, first_ms, last_ms FROM pipeline_coverage WHERE symbol IN "
                    f"({', '.join(['%s'] * len(wanted))}) FOR UPDATE", wanted)
        for symbol, first, last in cur.fetchall():
            out[symbol].append((int(first), int(last)))
    return {s: coverage.union(r) for s, r in out.items()}


def save_coverage(cur: Any, symbol: str, ranges: Sequence[Range], before: Sequence[Range] | None = None) -> None:
    """The symbol's coverage becomes ``ranges``: with ``before`` (what ``load_coverage`` read), only the ranges that
    changed are deleted and inserted (a batch's statements stay bounded by what it changed, not by the history of
    gaps); without, all of them."""
    if before is None:
        cur.execute("DELETE FROM pipeline_coverage WHERE symbol = %s", (symbol,))
        removed, added = [], list(ranges)
    else:
        removed, added = sorted(set(before) - set(ranges)), sorted(set(ranges) - set(before))
    if removed:
        cur.executemany("DELETE FROM pipeline_coverage WHERE symbol = %s AND first_ms = %s AND last_ms = %s",
                        [(symbol, a, b) for a, b in removed])
    if added:
        cur.executemany("INSERT INTO pipeline_coverage (symbol, first_ms, last_ms) VALUES (%s, %s, %s)",
                        [(symbol, a, b) for a, b in added])


def finalize_new(cur: Any, symbol: str, spans: Sequence[tuple[int, int, int]]) -> int:
    """Mark final every open window of ``symbol`` in ``spans`` (``coverage.newly_final``: first start, last start,
    end limit): the windows the coverage a batch added may have completed."""
    now, finalized = _now(), 0
    for first_start, last_start, end_limit in spans:
        finalized += cur.execute("UPDATE moving_averages SET is_final = 1, updated_at = %s WHERE symbol = %s "
                                 "AND is_final = 0 AND start_time >= %s AND start_time <= %s AND end_time <= %s",
                                 (now, symbol, utc(first_start), utc(last_start), utc(end_limit)))
    return finalized


REASON_CHARS = 255  # quarantine.reason
RAW_VALUE_CHARS = 4_000_000  # quarantine.raw_value (MEDIUMTEXT: 16 MiB, up to 4 bytes a character)


@dataclasses.dataclass(frozen=True)
class QuarantinedMessage:
    topic: str
    partition: int
    offset: int
    kafka_timestamp: datetime | None
    raw_value: str | None
    reason: str

    @property
    def digest(self) -> str:
        """What tells this message from another one at the same position (a recreated topic reuses offsets)."""
        stamp = self.kafka_timestamp.isoformat() if self.kafka_timestamp else "-"
        return hashlib.sha256(f"{stamp}\n{self.raw_value}".encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def identity(self) -> tuple[str, int, int, str]:
        return self.topic, self.partition, self.offset, self.digest

    def row(self, now: datetime) -> tuple[Any, ...]:
        """Cut explicitly to what the columns hold (never left to the server: strict mode would fail the batch,
        ``INSERT IGNORE`` would hide it), saying so in the kept text."""
        raw = self.raw_value
        if raw is not None and len(raw) > RAW_VALUE_CHARS:
            raw = f"{raw[:RAW_VALUE_CHARS]}... [cut: {len(raw)} characters in the message]"
        reason = self.reason if len(self.reason) <= REASON_CHARS else self.reason[:REASON_CHARS - 3] + "..."
        return (self.topic, self.partition, self.offset, self.digest, self.kafka_timestamp, reason, raw, now)


def add_quarantine(cur: Any, messages: Sequence[QuarantinedMessage]) -> set[tuple[str, int, int, str]]:
    """Keep rejected messages with their reason, each once (by position and content); returns the identities of
    those that were not kept before (a re-executed batch finds its messages kept and adds nothing)."""
    wanted = {m.identity: m for m in messages}
    known: set[tuple[str, int, int, str]] = set()
    keys = sorted(wanted)
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i:i + _KEY_CHUNK]
        tuples = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
        cur.execute("SELECT topic, kafka_partition, kafka_offset, digest FROM quarantine WHERE "
                    f"(topic, kafka_partition, kafka_offset, digest) IN ({tuples}) FOR UPDATE",
                    [v for k in chunk for v in k])
        known.update((str(t), int(p), int(o), str(d)) for t, p, o, d in cur.fetchall())
    new = [m for k, m in sorted(wanted.items()) if k not in known]
    if new:
        now = _now()
        cur.executemany("INSERT INTO quarantine (topic, kafka_partition, kafka_offset, digest, kafka_timestamp, "
                        "reason, raw_value, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [m.row(now) for m in new])
    return {m.identity for m in new}


def read_windows(url: MysqlUrl, symbol: str | None = None) -> list[dict[str, Any]]:
    with transaction(url) as cur:
        where, params = ("WHERE symbol = %s", (symbol,)) if symbol else ("", ())
        cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages {where} ORDER BY symbol, start_time",
                    params)
        return [dict(zip(WINDOW_COLUMNS, row, strict=True)) for row in cur.fetchall()]


# Accounts (issue 10, ADR-10): the job writes as an account that may only SELECT, INSERT, UPDATE and DELETE; the
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
    from pipeline.errors import ConfigError

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
