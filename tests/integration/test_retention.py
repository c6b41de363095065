"""Retention and backups against a real MySQL server: ``pipeline prune`` deletes exactly the rows its settings no
longer keep and none a re-executed batch or a re-read message still needs; coverage ranges stay merged; and a
database dumped with mariadb-dump (mysqldump), dropped and restored reads back the same, and takes the batches a
restored checkpoint replays without counting anything twice.

Batches are gathered by the core and applied by ``core.unit_of_work`` on the MySQL adapter, the writer's own path
(no Spark): a topic partition is a list of encoded messages, a batch a range of its offsets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from pipeline.adapters.mysql import connection, migrations, reads, retention
from pipeline.adapters.mysql.retention import Replay
from pipeline.adapters.mysql.runs import PastBatch, insert_batches
from pipeline.adapters.mysql.store import MysqlWindowStore
from pipeline.core import coverage, times, unit_of_work
from pipeline.core.batch import BatchCounts, BatchRead, Delivered, Gathered, QuarantinedMessage, Refused, gather
from pipeline.core.messages import Heartbeat, encode_heartbeat, encode_trade
from pipeline.core.trades import Trade
from pipeline.settings import MysqlUrl, Settings
from tests.cli_helpers import env_for
from tests.cli_helpers import run as run_cli

MINUTE = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
PUBLISHED_MS = MINUTE + 7_200_000  # every message's Kafka timestamp: after every time the messages speak of
NOW = times.utc_now()
OLD, RECENT = NOW - timedelta(days=400), NOW - timedelta(hours=1)


def trade(symbol: str, agg_id: int, at_ms: int, price: str = "100.5") -> bytes:
    return encode_trade(Trade(symbol, agg_id, Decimal(price), Decimal("0.25"), 10 * agg_id, 10 * agg_id + 1, at_ms,
                              agg_id % 2 == 0, True))[1]


def beat(symbol: str, start_ms: int, end_ms: int) -> bytes:
    return encode_heartbeat(Heartbeat(symbol, start_ms, end_ms))[1]


def batch(partition: Sequence[bytes], lo: int, hi: int, topic: str = "trades") -> Gathered:
    """Offsets ``lo..hi-1`` of ``partition`` as one batch, gathered as the writer's driver path does."""
    delivered = [Delivered(topic, 0, o, PUBLISHED_MS, partition[o]) for o in range(lo, hi)]
    digest = hashlib.sha256(b"\n".join(b"%d %s" % (d.offset, d.value or b"") for d in delivered)).hexdigest()

    def quarantined(refused: list[Refused]) -> list[QuarantinedMessage]:
        return [QuarantinedMessage(topic, p, o, times.utc(PUBLISHED_MS), partition[o].decode(), why)
                for p, o, why in refused]

    return gather(BatchRead(hi - lo, f"{topic}/0:{lo}-{hi - 1}", digest), delivered, quarantined)


def apply(url: MysqlUrl, g: Gathered, run: str, batch_id: int) -> BatchCounts | None:
    return connection.with_retries(url, lambda cur: unit_of_work.apply(MysqlWindowStore(cur, run, "stream"), g,
                                                                       batch_id), f"batch {batch_id}")


def rows(url: MysqlUrl, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connection.transaction(url) as cur:
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]


def ledger(url: MysqlUrl) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT run_id, batch_id FROM pipeline_batches ORDER BY id")


def past(run: str, batch_ids: range, at: datetime) -> list[PastBatch]:
    return [PastBatch(run, "stream", b, hashlib.sha256(f"{run} {b}".encode()).hexdigest(), f"trades/0:{b}-{b}",
                      times.ms(at), 1, 1) for b in batch_ids]


def add_quarantine(url: MysqlUrl, messages: Sequence[tuple[str, int, int, datetime]]) -> None:
    """Quarantine rows (topic, partition, offset, received at), as add_quarantine writes them."""
    with connection.transaction(url) as cur:
        cur.executemany("INSERT INTO quarantine (topic, kafka_partition, kafka_offset, digest, reason, raw_value, "
                        "received_at) VALUES (%s, %s, %s, SHA2(%s, 256), 'not JSON', 'x', %s)",
                        [(t, p, o, f"{t}/{p}:{o}", at) for t, p, o, at in messages])


def add_repairs(url: MysqlUrl, at: Sequence[datetime]) -> None:
    with connection.transaction(url) as cur:
        cur.executemany("INSERT INTO pipeline_repairs (symbol, start_time, reason, row_before, repaired_at) "
                        "VALUES ('BTCUSDT', %s, 'differs from the klines', NULL, %s)",
                        [(times.utc(MINUTE), when) for when in at])


def write_checkpoint(checkpoint: Path, run: str, committed_batch: int, ends: dict[str, dict[str, int]]) -> None:
    """A checkpoint as Spark leaves it after a crash: batches up to ``committed_batch`` committed, the next one
    logged (its offsets written) but not committed."""
    query = checkpoint / "stream"
    for sub in ("offsets", "commits"):
        (query / sub).mkdir(parents=True)
    (query / "metadata").write_text(json.dumps({"id": run}) + "\n")
    for b in (committed_batch, committed_batch + 1):
        (query / "offsets" / str(b)).write_text(f'v1\n{{"batchWatermarkMs":0,"batchTimestampMs":{PUBLISHED_MS}}}\n'
                                                f"{json.dumps(ends)}")
    (query / "commits" / str(committed_batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_prune_deletes_exactly_what_its_settings_no_longer_keep(settings_for: Settings, tmp_path: Path) -> None:
    """`pipeline prune` as cron runs it (defaults: ledger 7 days, quarantine 90, repairs 365), with the job's
    checkpoint committed up to batch 14 of its run and offset 1,000 of partition 0."""
    url, run = settings_for.mysql_url, "6f1c1c1e-0000-4000-8000-000000000001"
    assert url is not None
    # The job's batches 0..19, older than 7 days (15..19 come after its checkpoint's commit), then a backfill's 1,010
    # within the 7 days: its first 10 are kept for their age, the others as the newest 1,000 too.
    insert_batches(url, [*past(run, range(20), NOW - timedelta(days=8)),
                         *past("backfill-run", range(1_010), NOW - timedelta(days=6))])
    add_quarantine(url, [("trades.backfill.x", 0, 10, NOW - timedelta(days=91)),  # another topic, old: deleted
                         (settings_for.topic, 0, 999, NOW - timedelta(days=91)),  # committed past, old: deleted
                         (settings_for.topic, 0, 1_000, NOW - timedelta(days=91)),  # read again: kept
                         (settings_for.topic, 2, 3, NOW - timedelta(days=91)),  # partition never committed: kept
                         (settings_for.topic, 0, 20, NOW - timedelta(days=89))])  # within the 90 days
    add_repairs(url, [NOW - timedelta(days=366), NOW - timedelta(days=364)])
    write_checkpoint(tmp_path / "checkpoint", run, 14, {settings_for.topic: {"0": 1_000, "1": 50}})
    env = env_for(settings_for)
    before = {t: rows(url, f"SELECT * FROM {t} ORDER BY id") for t in ("pipeline_batches", "quarantine",
                                                                          "pipeline_repairs")}

    dry = run_cli(["prune", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "pipeline_batches: would delete 15 rows" in dry.stdout
    assert "quarantine: would delete 2 rows" in dry.stdout and "pipeline_repairs: would delete 1 rows" in dry.stdout
    assert {t: rows(url, f"SELECT * FROM {t} ORDER BY id") for t in before} == before

    done = run_cli(["prune"], env)
    assert done.returncode == 0, done.stderr
    assert f"checkpoint {tmp_path / 'checkpoint'} (run {run}, newest committed batch 14)" in done.stdout
    assert "pipeline_batches: deleted 15 rows with applied_at before" in done.stdout
    assert "pipeline_coverage 0 ranges for 0 symbols (merged as written), pipeline_late_trades 0 rows" in done.stdout
    assert ledger(url) == [(run, b) for b in range(15, 20)] + [("backfill-run", b) for b in range(1_010)]
    assert rows(url, "SELECT topic, kafka_partition, kafka_offset FROM quarantine ORDER BY id") == [
        (settings_for.topic, 0, 1_000), (settings_for.topic, 2, 3), (settings_for.topic, 0, 20)]
    assert rows(url, "SELECT id FROM pipeline_repairs") == [(2,)]

    again = run_cli(["prune"], {**env, "PIPELINE_RETAIN_LEDGER_DAYS": "0", "PIPELINE_RETAIN_QUARANTINE_DAYS": "1"})
    assert again.returncode == 0, again.stderr
    assert "pipeline_batches: kept forever (PIPELINE_RETAIN_LEDGER_DAYS=0)" in again.stdout
    assert "quarantine: deleted 1 rows" in again.stdout  # offset 20: committed past, 89 days old
    assert len(ledger(url)) == 1_015


def test_chunks_dry_runs_and_the_newest_batches(mysql_url: MysqlUrl) -> None:
    """Many small transactions delete what one would, a dry run counts exactly that, and the newest rows of the
    ledger stay whatever their age."""
    insert_batches(mysql_url, past("a", range(30), OLD))
    add_quarantine(mysql_url, [("t", 0, o, OLD) for o in range(11)])
    cutoffs = {"pipeline_batches": NOW, "quarantine": NOW, "pipeline_repairs": NOW}
    counted = retention.prune(mysql_url, cutoffs, None, dry_run=True, chunk_rows=4, keep_newest=7)
    assert [p.deleted for p in counted] == [23, 11, 0]
    assert len(ledger(mysql_url)) == 30
    pruned = retention.prune(mysql_url, cutoffs, None, chunk_rows=4, keep_newest=7)
    assert [p.deleted for p in pruned] == [23, 11, 0]
    assert ledger(mysql_url) == [("a", b) for b in range(23, 30)]
    assert retention.prune(mysql_url, cutoffs, None, chunk_rows=4, keep_newest=7)[0].deleted == 0


def _crashed_run(url: MysqlUrl) -> tuple[list[bytes], list[Gathered]]:
    """Run "job" applied three batches of BTCUSDT's minute (the last one with the heartbeat that made it final),
    a month ago; its checkpoint committed batch 1 only (a crash between MySQL's commit and Spark's)."""
    partition = [*(trade("BTCUSDT", i, MINUTE + 1_000 * i) for i in range(1, 7)),
                 beat("BTCUSDT", MINUTE, MINUTE + 60_000)]
    batches = [batch(partition, 0, 2), batch(partition, 2, 4), batch(partition, 4, 7)]
    for batch_id, g in enumerate(batches):
        assert apply(url, g, "job", batch_id) is not None
    insert_batches(url, past("backfill", range(3), OLD))  # newer rows of another run
    with connection.transaction(url) as cur:
        cur.execute("UPDATE pipeline_batches SET applied_at = %s", (OLD,))
    return partition, batches


def test_a_reexecuted_batch_whose_row_is_kept_is_still_recognised(mysql_url: MysqlUrl) -> None:
    _, batches = _crashed_run(mysql_url)
    windows = reads.read_windows(mysql_url)
    pruned = retention.prune(mysql_url, {"pipeline_batches": NOW}, Replay("job", 1, "trades", {0: 4}),
                             keep_newest=1)
    assert pruned[0].deleted == 4  # job's batches 0 and 1, backfill's 0 and 1
    assert ledger(mysql_url) == [("job", 2), ("backfill", 2)]
    # Spark executes batch 2 again after the restart, with the same offsets: known, nothing done.
    assert apply(mysql_url, batches[2], "job", 2) is None
    # A batch whose row is gone (only a checkpoint restored from before it could read it again) changes no window:
    # its trades are duplicates by agg id, and its new row says so.
    assert apply(mysql_url, batches[1], "job", 1) == BatchCounts(duplicates=2)
    assert [dataclass_without_updated_at(w) for w in reads.read_windows(mysql_url)] == [
        dataclass_without_updated_at(w) for w in windows]
    assert windows[0].is_final and windows[0].agg_trade_count == 6


def dataclass_without_updated_at(window: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(window).items() if k != "updated_at"}


def test_coverage_ranges_are_stored_merged_so_old_ones_never_pile_up(mysql_url: MysqlUrl) -> None:
    """Each batch replaces the ranges its heartbeats join: a symbol keeps one row per covered stretch, however many
    heartbeats made it; a gap is one more row until it is filled. Nothing for prune to do."""
    m = 60_000
    heartbeats = [[("BTCUSDT", 0, m), ("ETHUSDT", 0, m)], [("BTCUSDT", m, 2 * m)], [("BTCUSDT", 5 * m, 6 * m)],
                  [("BTCUSDT", m // 2, 3 * m // 2), ("ETHUSDT", m, 3 * m)], [("BTCUSDT", 2 * m, 5 * m)],
                  *([("BTCUSDT", k * m, (k + 1) * m)] for k in range(6, 21))]  # a heartbeat a minute
    partition = [beat(s, MINUTE + a, MINUTE + b) for group in heartbeats for s, a, b in group]
    sent: list[tuple[str, int, int]] = []
    stored_rows = []
    offset = 0
    for batch_id, group in enumerate(heartbeats):
        apply(mysql_url, batch(partition, offset, offset + len(group)), "run", batch_id)
        offset += len(group)
        sent += group
        stored = rows(mysql_url, "SELECT symbol, first_ms, last_ms FROM pipeline_coverage ORDER BY symbol, first_ms")
        expected = [(s, a, b) for s in ("BTCUSDT", "ETHUSDT")
                    for a, b in coverage.union((MINUTE + x, MINUTE + y - 1) for t, x, y in sent if t == s)]
        assert stored == expected
        stored_rows.append(len(stored))
    assert stored_rows[:5] == [2, 2, 3, 3, 2]  # the gap made one more row, filling it joined them
    assert set(stored_rows[5:]) == {2}  # 15 heartbeats later: still one row per symbol


# The restore drill (docs/OPERATIONS_RUNBOOK.md, "Backup and restore"): the commands the runbook gives.
DUMP_OPTIONS = ("--single-transaction", "--skip-add-locks", "--no-tablespaces", "--default-character-set=utf8mb4",
                "--hex-blob")


def _tool(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}",) if os.access(p, os.X_OK)), None)
        if found:
            return found
    return None


@pytest.fixture
def dump_tools() -> tuple[str, str]:
    """mariadb-dump (or mysqldump) and the mariadb (or mysql) client; Debian's mariadb-server depends on them."""
    dump, client = _tool("mariadb-dump", "mysqldump"), _tool("mariadb", "mysql")
    if dump is None or client is None:
        pytest.skip("no mariadb-dump / mysqldump or mariadb / mysql client here (Debian: apt-get install "
                    "mariadb-client)")
    return dump, client


def options_file(url: MysqlUrl, path: Path) -> Path:
    """The account for the MySQL client tools, in a file only its owner reads (never on a command line)."""
    quoted = url.password.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'[client]\nuser={url.user}\npassword="{quoted}"\nhost={url.host}\nport={url.port}\n')
    path.chmod(0o600)
    return path


def backup(tools: tuple[str, str], url: MysqlUrl, options: Path, out: Path) -> None:
    with out.open("wb") as f:
        done = subprocess.run([tools[0], f"--defaults-extra-file={options}", *DUMP_OPTIONS, url.database],
                              stdout=f, stderr=subprocess.PIPE, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def restore(tools: tuple[str, str], url: MysqlUrl, options: Path, dump: Path) -> None:
    """Drop the database, create it empty, load the dump (the schema owner's account does all three)."""
    with pymysql.connect(**url.connect_arguments(database=False), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{url.database}`")
        cur.execute(f"CREATE DATABASE `{url.database}`")
    with dump.open("rb") as f:
        done = subprocess.run([tools[1], f"--defaults-extra-file={options}", "--default-character-set=utf8mb4",
                               url.database], stdin=f, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def drill_partition() -> list[bytes]:
    """Two symbols' minute, a message that is not JSON (4-byte UTF-8 in it), heartbeats that make both minutes
    final, a late trade behind BTCUSDT's heartbeat, and an open ETHUSDT minute."""
    return [*(trade("BTCUSDT", 100 + i, MINUTE + 1_000 * i, f"{100 + i}.5") for i in range(6)),
            *(trade("ETHUSDT", 200 + i, MINUTE + 2_000 * i, "2500.25") for i in range(4)),
            '{"v":1,"type":"trade","s":"BTCUSDT" \U0001F600'.encode(),
            beat("BTCUSDT", MINUTE - 60_000, MINUTE + 60_000), trade("BTCUSDT", 106, MINUTE + 59_000),
            trade("ETHUSDT", 204, MINUTE + 61_000), beat("ETHUSDT", MINUTE, MINUTE + 60_000)]


CUTS = ((0, 6), (6, 11), (11, 15))
# Columns a batch applied at another time, under another checkpoint, fills differently: when and by which run
WRITTEN = ("id", "updated_at", "received_at", "applied_at", "recorded_at", "run_id", "batch_id")


def database_state(url: MysqlUrl, *skip: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted (``skip``: columns left out, where a re-read may write other values)."""
    out = {}
    for (table,) in rows(url, "SHOW TABLES"):
        columns = ", ".join(r[0] for r in rows(url, f"SHOW COLUMNS FROM {table}") if r[0] not in skip)
        out[table] = rows(url, f"SELECT {columns} FROM {table} ORDER BY {columns}")
    return out


def status_view(settings: Settings) -> dict[str, Any]:
    """What `pipeline status --json` shows from MySQL, ages aside."""
    report = json.loads(run_cli(["status", "--json"], env_for(settings)).stdout)
    last = report["last_batch"]
    return {**{k: report[k] for k in ("windows_open", "windows_final", "late_trades", "quarantined")},
            "last_batch": {k: last[k] for k in ("batch_id", "applied_at", "trades_merged")},
            "coverage": [{k: c[k] for k in ("symbol", "complete_before")} for c in report["coverage"]]}


def test_a_dumped_dropped_and_restored_database_reads_back_the_same(
        settings_for: Settings, dump_tools: tuple[str, str], tmp_path: Path) -> None:
    url, admin = settings_for.mysql_url, settings_for.mysql_admin_url
    assert url is not None and admin is not None
    partition = drill_partition()
    for batch_id, (lo, hi) in enumerate(CUTS):
        apply(url, batch(partition, lo, hi), "job", batch_id)
    add_repairs(url, [RECENT])
    before, shown = database_state(url), status_view(settings_for)
    assert shown["windows_final"] == 2 and shown["late_trades"] == 1 and shown["quarantined"] == 2

    options = options_file(admin, tmp_path / "admin.cnf")
    backup(dump_tools, admin, options, tmp_path / "pipeline.sql")
    restore(dump_tools, admin, options, tmp_path / "pipeline.sql")

    assert migrations.schema_version(url) == len(migrations.MIGRATIONS)
    assert len(before) == 7 and all(before.values())  # every table of the schema, none empty
    assert database_state(url) == before  # every row and column, DATETIME(3), DECIMAL and utf8mb4 included
    assert status_view(settings_for) == shown
    # The job goes on: Spark executing its last batch again is known by the restored ledger...
    assert apply(url, batch(partition, *CUTS[2]), "job", 2) is None
    # ...and a checkpoint copied before the dump (the safe order) re-reads offsets 6..14 under a cut of its own:
    # every trade a duplicate by agg id, the late trade and the message that is not JSON known in quarantine.
    counts = apply(url, batch(partition, 6, 15), "restored", 1)
    assert counts == BatchCounts(duplicates=6)
    after = database_state(url)
    assert len(after.pop("pipeline_batches")) == len(before.pop("pipeline_batches")) + 1
    assert after == before


def test_a_database_backup_older_than_the_checkpoint_needs_the_topic_read_again(
        settings_for: Settings, dump_tools: tuple[str, str], tmp_path: Path) -> None:
    """The unsafe order: the database restored from before the checkpoint's position misses the batches in between
    (the job resumes after them); reading the topic again from its first offset (a new checkpoint) restores them,
    each trade once."""
    url, admin = settings_for.mysql_url, settings_for.mysql_admin_url
    assert url is not None and admin is not None
    partition, options, old = drill_partition(), options_file(admin, tmp_path / "admin.cnf"), tmp_path / "old.sql"
    for batch_id, (lo, hi) in enumerate(CUTS):
        apply(url, batch(partition, lo, hi), "job", batch_id)
        if batch_id == 0:
            backup(dump_tools, admin, options, old)
    whole = database_state(url, *WRITTEN)
    restore(dump_tools, admin, options, old)
    assert [w.symbol for w in reads.read_windows(url)] == ["BTCUSDT"]  # ETHUSDT's minutes and the late trade: lost
    counts = apply(url, batch(partition, 0, len(partition)), "new-checkpoint", 0)
    assert counts is not None and counts.trades_merged == 5 and counts.late_trades == 1 and counts.duplicates == 6
    again = database_state(url, *WRITTEN)
    assert again.pop("pipeline_batches") != whole.pop("pipeline_batches")  # the ledger: other cuts, other rows
    assert again == whole


def test_pruned_quarantine_rows_leave_late_trades_counted_once_and_refused_messages_kept_again(
        mysql_url: MysqlUrl) -> None:
    """What deleting quarantine rows of messages Kafka still holds means, when a new checkpoint reads them again."""
    partition = drill_partition()
    for batch_id, (lo, hi) in enumerate(CUTS):
        apply(mysql_url, batch(partition, lo, hi), "job", batch_id)
    assert retention.prune(mysql_url, {"quarantine": NOW + timedelta(days=1)}, None)[1].deleted == 2
    counts = apply(mysql_url, batch(partition, 6, 15), "new-checkpoint", 0)
    assert counts == BatchCounts(duplicates=6, quarantined=1)  # the late trade: known by its agg id
    assert rows(mysql_url, "SELECT symbol, late_trade_count FROM moving_averages ORDER BY 1, 2") == [
        ("BTCUSDT", 1), ("ETHUSDT", 0), ("ETHUSDT", 0)]
    assert rows(mysql_url, "SELECT kafka_offset, reason LIKE 'late:%%' FROM quarantine") == [(10, 0)]
