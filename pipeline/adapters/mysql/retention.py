"""Retention: old rows of the ledger (``pipeline_batches``), ``quarantine`` and ``pipeline_repairs`` deleted beside a
running job, one chunk at a time, each chunk in its own short transaction.

    gather   the next ``CHUNK_ROWS`` rows of a table, oldest first (by id: the order they were written in)
    decide   ``deletable``: written before the table's cutoff, and not a row a re-execution or a re-read still needs
    apply    DELETE of those ids (by primary key: only those rows are locked, never the newest ones the job writes),
             committed; the next chunk starts after the last id read. The walk ends at the first row written after
             the cutoff.

What a kept row is for, so what deleting it means:

- ledger: a batch Spark executes again after a crash (the one after the checkpoint's newest commit, with the same
  offsets) finds its row by fingerprint and changes nothing. Those rows are kept whatever their age (``Replay``), and
  so are the newest ``KEEP_NEWEST_BATCHES`` (``pipeline status`` reads the newest 200's offsets when it cannot read
  the checkpoint). Any other row is history: a batch applied again without its row (under a checkpoint restored
  from long ago) still changes no window, since its trades are duplicates by agg id, but its own new row counts
  them as duplicates. The job's "since the checkpoint began" totals then sum the rows kept only.
- quarantine: a refused message read again at the same Kafka position (a batch executed again, a restored or new
  checkpoint) is known by its row and kept once; without the row it is kept, and counted in the ledger's
  ``quarantined``, once more. A late trade is known by (symbol, agg id) in ``pipeline_late_trades``, so deleting its
  row here loses its raw text, never its count. The rows of messages the checkpoint will read again are kept whatever
  their age; for a new checkpoint, which reads all Kafka holds, the retention should exceed the topic's
  ``retention.ms``. Beyond that a row is an operator's record only.
- repairs: what ``reconcile --repair`` replaced, for people; nothing reads it back.

Never pruned, being window state: ``pipeline_late_trades`` (how a late trade counts once, whenever a backfill brings it
again; one row per late trade, which is rare) and ``pipeline_coverage``, whose ranges stay few: each batch stores the
union of the stored ranges and its heartbeats', one row per covered stretch (tests/integration/test_retention.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pipeline.adapters.mysql import connection
from pipeline.settings import MysqlUrl

CHUNK_ROWS = 5_000  # rows a DELETE removes at most: a transaction of a few tens of ms, whatever the backlog
# At least the newest batches the checkpoint's logs name (spark.sql.streaming.minBatchesToRetain: 20) and the 200
# whose offsets `pipeline status` reads when it cannot read the checkpoint.
KEEP_NEWEST_BATCHES = 1_000


@dataclasses.dataclass(frozen=True)
class Replay:
    """What the job's checkpoint may still read again (``pipeline prune`` reads it from the checkpoint's files)."""

    run_id: str  # the checkpoint's query id: its ledger rows' run_id
    committed_batch: int  # its newest committed batch (-1: none); Spark may execute the next one again
    topic: str
    committed: Mapping[int, int]  # per partition of ``topic``, the end offset committed (a partition missing: 0)


class Row(NamedTuple):
    id: int
    written: datetime  # naive UTC
    key: tuple[Any, ...]  # what the table's rule reads: ``Table.key``


def cutoff(now: datetime, days: int) -> datetime | None:
    """Rows written before this go; None for ``days`` 0 (kept forever)."""
    return None if days <= 0 else now - timedelta(days=days)


def batch_needed(row: Row, replay: Replay | None) -> bool:
    """A ledger row (run id, batch id) of the checkpoint's run after its newest commit: Spark executes a batch it
    logged but did not commit again, with the same offsets, and the row is how it is recognised."""
    if replay is None:
        return False
    run_id, batch_id = row.key
    return str(run_id) == replay.run_id and int(batch_id) > replay.committed_batch


def message_needed(row: Row, replay: Replay | None) -> bool:
    """A quarantine row (topic, partition, offset) of a message the checkpoint has not committed past: it reads
    that message again, and the row is how it is known as kept already."""
    if replay is None:
        return False
    topic, partition, offset = row.key
    return str(topic) == replay.topic and int(offset) >= replay.committed.get(int(partition), 0)


def deletable(rows: Sequence[Row], before: datetime, needed: Callable[[Row], bool]) -> tuple[list[int], bool]:
    """Of one chunk of rows, oldest first: the ids to delete, and whether the walk ends here (a row written at or
    after ``before``; those after it are as new, give or take a transaction's length, and wait for the next run)."""
    ids: list[int] = []
    for row in rows:
        if row.written >= before:
            return ids, True
        if not needed(row):
            ids.append(row.id)
    return ids, False


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    written: str  # the column of when a row was written
    key: tuple[str, ...]  # the columns ``needed`` reads
    needed: Callable[[Row, Replay | None], bool]


def _never(_row: Row, _replay: Replay | None) -> bool:
    return False


LEDGER = Table("pipeline_batches", "applied_at", ("run_id", "batch_id"), batch_needed)
QUARANTINE = Table("quarantine", "received_at", ("topic", "kafka_partition", "kafka_offset"), message_needed)
REPAIRS = Table("pipeline_repairs", "repaired_at", (), _never)
TABLES = (LEDGER, QUARANTINE, REPAIRS)


@dataclasses.dataclass(frozen=True)
class Pruned:
    table: Table
    before: datetime | None  # None: kept forever
    deleted: int  # with ``dry_run``: the rows that would be


def prune(url: MysqlUrl, cutoffs: Mapping[str, datetime | None], replay: Replay | None, dry_run: bool = False,
          chunk_rows: int = CHUNK_ROWS, keep_newest: int = KEEP_NEWEST_BATCHES) -> list[Pruned]:
    """Delete (``dry_run``: count) each table's rows written before its cutoff (by table name; None or missing: kept
    forever) that nothing still needs, ``chunk_rows`` a transaction; the ledger's newest ``keep_newest`` are kept."""
    conn = connection.Connection(url)
    try:
        out = []
        for table in TABLES:
            before, deleted = cutoffs.get(table.name), 0
            below = _newest_floor(url, conn, keep_newest) if table is LEDGER and before is not None else None
            if before is not None and below != 0:
                deleted = _walk(url, conn, table, before, replay, dry_run, chunk_rows, below)
            out.append(Pruned(table, before, deleted))
        return out
    finally:
        conn.close()


def _newest_floor(url: MysqlUrl, conn: connection.Connection, keep_newest: int) -> int:
    """The id of the ledger's ``keep_newest``-th newest row (rows below it may go); 0 if it holds fewer."""
    def work(cur: Any) -> int:
        cur.execute("SELECT id FROM pipeline_batches ORDER BY id DESC LIMIT 1 OFFSET %s", (keep_newest - 1,))
        found = cur.fetchone()
        return int(found[0]) if found else 0

    return connection.with_retries(url, work, "prune: the ledger's newest rows", connection=conn)


def _walk(url: MysqlUrl, conn: connection.Connection, table: Table, before: datetime, replay: Replay | None,
          dry_run: bool, chunk_rows: int, below: int | None) -> int:
    """Chunks of ``table`` from its oldest row on, each read and deleted in one transaction (run again whole on a
    deadlock or a lost connection); the rows deleted."""
    columns = ", ".join(("id", table.written, *table.key))
    bound = "" if below is None else " AND id < %s"
    select = f"SELECT {columns} FROM {table.name} WHERE id > %s{bound} ORDER BY id LIMIT %s"
    last, total = 0, 0
    while True:
        def work(cur: Any, after: int = last) -> tuple[int, int, bool]:
            cur.execute(select, (after, *(() if below is None else (below,)), chunk_rows))
            rows = [Row(int(r[0]), r[1], tuple(r[2:])) for r in cur.fetchall()]
            ids, done = deletable(rows, before, lambda row: table.needed(row, replay))
            if ids and not dry_run:
                cur.execute(f"DELETE FROM {table.name} WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)
            return (rows[-1].id if rows else after), len(ids), done or len(rows) < chunk_rows

        last, deleted, done = connection.with_retries(url, work, f"prune {table.name}", connection=conn)
        total += deleted
        if done:
            return total


def state_sizes(url: MysqlUrl) -> tuple[int, int, int]:
    """What the never-pruned state holds: coverage ranges, the symbols they are of, late trades recorded."""
    with connection.transaction(url) as cur:
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT symbol) FROM pipeline_coverage")
        ranges, symbols = cur.fetchone()
        cur.execute("SELECT COUNT(*) FROM pipeline_late_trades")
        return int(ranges), int(symbols), int(cur.fetchone()[0])
