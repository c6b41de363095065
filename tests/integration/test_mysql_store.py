"""The MySQL adapter's guarantees against a real server: the batch ledger, the quarantine, and retries."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pymysql
import pytest

from pipeline.adapters.mysql import connection, ledger, migrations, quarantine
from pipeline.core.batch import BatchCounts, QuarantinedMessage
from pipeline.settings import MysqlUrl


@pytest.fixture
def url(mysql_url: MysqlUrl) -> MysqlUrl:
    """The writer's account on a fresh database with the newest schema."""
    return mysql_url


def test_the_ledger_knows_a_batch_by_what_it_read_not_by_its_batch_id(url: MysqlUrl) -> None:
    with connection.transaction(url) as cur:
        assert ledger.claim_batch(cur, "run-a", "stream", 0, "f" * 64, "t/0:0-9")
        ledger.record_batch(cur, "stream", "f" * 64, BatchCounts(trades_merged=10))
    with connection.transaction(url) as cur:
        # The same content again (a re-execution, under any run or batch id): applied before.
        assert not ledger.claim_batch(cur, "run-b", "stream", 7, "f" * 64, "t/0:0-9")
        # Batch id 0 of the same run reading other offsets (a deleted or restored checkpoint): a new batch.
        assert ledger.claim_batch(cur, "run-a", "stream", 0, "e" * 64, "t/0:0-19")
    assert ledger.run_totals(url, "run-a") == BatchCounts(trades_merged=10)


def _message(offset: int, raw: str | None, reason: str = "not JSON") -> QuarantinedMessage:
    return QuarantinedMessage("t", 0, offset, datetime(2026, 1, 1, 12), raw, reason)


def test_quarantine_keeps_each_message_once_by_position_and_content(url: MysqlUrl) -> None:
    first = [_message(0, "x"), _message(1, "y")]
    with connection.transaction(url) as cur:
        assert quarantine.add_quarantine(cur, first) == {m.identity for m in first}
    with connection.transaction(url) as cur:
        # The same messages again (a re-executed batch): nothing new. A recreated topic's new message at a
        # position already used: new, not silently dropped as INSERT IGNORE did.
        recreated = _message(1, "z")
        assert quarantine.add_quarantine(cur, [*first, recreated]) == {recreated.identity}
        cur.execute("SELECT kafka_offset, raw_value FROM quarantine ORDER BY id")
        assert cur.fetchall() == ((0, "x"), (1, "y"), (1, "z"))


def test_quarantine_cuts_what_its_columns_cannot_hold_and_says_so(url: MysqlUrl) -> None:
    huge = "é" * (quarantine.RAW_VALUE_CHARS + 10)  # 2 bytes each in utf8mb4: past MEDIUMTEXT's 16 MiB
    reason = "late: " + "w" * 400
    with connection.transaction(url) as cur:
        cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")  # a truncation would be an error, not a warning
        added = quarantine.add_quarantine(cur, [_message(0, huge, reason), _message(1, "\U0001F600 \x00 \ufffd")])
        assert len(added) == 2
        tail = f"... [cut: {quarantine.RAW_VALUE_CHARS + 10} characters in the message]"
        cur.execute(f"SELECT CHAR_LENGTH(raw_value), RIGHT(raw_value, {len(tail)}), reason FROM quarantine "
                    "ORDER BY kafka_offset")
        (length, kept_tail, kept_reason), _ = cur.fetchall()
    assert kept_tail == tail
    assert length == quarantine.RAW_VALUE_CHARS + len(tail)
    assert len(kept_reason) == 255 and kept_reason.endswith("...")
    with connection.transaction(url) as cur:
        cur.execute("SELECT raw_value FROM quarantine WHERE kafka_offset = 1")
        assert cur.fetchone()[0] == "\U0001F600 \x00 \ufffd"


def test_a_deadlock_is_retried_and_both_transactions_land(url: MysqlUrl) -> None:
    """Two writers lock two rows in opposite orders: MySQL kills one (1213); ``with_retries`` runs it again."""
    with connection.transaction(url) as cur:
        cur.executemany("INSERT INTO pipeline_coverage (symbol, first_ms, last_ms) VALUES (%s, 0, 0)",
                        [("AAA",), ("BBB",)])
    both_locked = threading.Barrier(2, timeout=30)
    attempts = {"AAA": 0, "BBB": 0}
    errors: list[BaseException] = []

    def writer(first: str, second: str) -> None:
        def work(cur: object) -> None:
            attempts[first] += 1
            cur.execute("UPDATE pipeline_coverage SET last_ms = last_ms + 1 WHERE symbol = %s", (first,))  # type: ignore[attr-defined]
            if attempts[first] == 1:
                both_locked.wait()
            cur.execute("UPDATE pipeline_coverage SET last_ms = last_ms + 1 WHERE symbol = %s", (second,))  # type: ignore[attr-defined]

        try:
            connection.with_retries(url, work, f"writer {first}", sleep=lambda s: time.sleep(0.1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=pair) for pair in (("AAA", "BBB"), ("BBB", "AAA"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(attempts.values()) == [1, 2]  # exactly one was chosen as the deadlock victim and ran again
    with connection.transaction(url) as cur:
        cur.execute("SELECT symbol, last_ms FROM pipeline_coverage ORDER BY symbol")
        assert cur.fetchall() == (("AAA", 2), ("BBB", 2))  # each transaction counted once


def test_a_lost_connection_is_retried_and_a_bad_statement_is_not(url: MysqlUrl) -> None:
    calls = []

    def killed_once(cur: object) -> int:
        calls.append(1)
        cur.execute("SELECT CONNECTION_ID()")  # type: ignore[attr-defined]
        if len(calls) == 1:
            own = cur.fetchone()[0]  # type: ignore[attr-defined]
            with connection.transaction(url) as other:
                other.execute(f"KILL {int(own)}")
            cur.execute("SELECT 1")  # type: ignore[attr-defined]  # 2013/2006: the server dropped us
        return len(calls)

    assert connection.with_retries(url, killed_once, "killed", sleep=lambda s: None) == 2

    def bad(cur: object) -> None:
        calls.append(1)
        cur.execute("SELEC 1")  # type: ignore[attr-defined]

    calls.clear()
    with pytest.raises(pymysql.err.ProgrammingError):
        connection.with_retries(url, bad, "bad", sleep=lambda s: None)
    assert len(calls) == 1


def test_retries_stop_at_the_deadline_with_the_cause(url: MysqlUrl) -> None:
    gone = MysqlUrl("pipeline", "x", "127.0.0.1", 1, "nothing")  # port 1: refused
    slept: list[float] = []
    with pytest.raises(Exception) as raised:
        connection.with_retries(gone, lambda cur: None, "unreachable", deadline_s=20, sleep=slept.append)
    assert connection.retryable(raised.value) and "unreachable" in str(raised.value)
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0]  # no time passes in these sleeps: the next one, 30 s, ends past it


def test_a_migration_interrupted_after_its_statements_finishes_at_the_next_start(mysql_admin_url: MysqlUrl) -> None:
    """DDL commits itself statement by statement; the version is written after the last one. Killed in between,
    the next start runs the applied statements again: each is found applied (it was atomic), not a wedge."""
    with connection.transaction(mysql_admin_url) as cur:
        cur.execute("UPDATE pipeline_schema SET version = 1")  # versions 2 and 3 applied, not recorded
    assert migrations.migrate_schema(mysql_admin_url) == len(migrations.MIGRATIONS)
    assert migrations.schema_version(mysql_admin_url) == len(migrations.MIGRATIONS)


def test_a_late_trade_is_recorded_once_by_symbol_and_agg_id(url: MysqlUrl) -> None:
    from pipeline.adapters.mysql import state

    minute = 1_767_268_800_000
    with connection.transaction(url) as cur:
        assert state.add_late_ids(cur, [("BTCUSDT", 7, minute), ("BTCUSDT", 7, minute), ("ETHUSDT", 7, minute)]) == {
            ("BTCUSDT", 7), ("ETHUSDT", 7)}
    with connection.transaction(url) as cur:  # again, from another topic: only the new one is fresh
        assert state.add_late_ids(cur, [("BTCUSDT", 7, minute), ("BTCUSDT", 8, minute)]) == {("BTCUSDT", 8)}
        cur.execute("SELECT COUNT(*) FROM pipeline_late_trades")
        assert cur.fetchone()[0] == 3
