"""The batch ledger (``pipeline_batches``): each micro-batch is applied in one transaction together with a row keyed
by the fingerprint of what the batch read (topic, partitions, offsets and contents): a batch that Spark re-executes
after a crash finds its row and changes nothing, whatever became of the checkpoint's batch ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pymysql

from pipeline.adapters.mysql.connection import transaction
from pipeline.core.batch import BatchCounts
from pipeline.core.times import utc_now
from pipeline.settings import MysqlUrl

_DUPLICATE_KEY = 1062


def claim_batch(cur: Any, run_id: str, query: str, batch_id: int, fingerprint: str, offsets: str) -> bool:
    """Claim the ledger slot of a batch, known by the fingerprint of what it read; False if it was applied before.

    Inserting first (not ``SELECT ... FOR UPDATE``) takes no gap lock: two writers never deadlock on the ledger, and
    a second writer of the same batch waits for the first one's commit and then finds it applied."""
    try:
        cur.execute("INSERT INTO pipeline_batches (run_id, query_name, batch_id, fingerprint, offsets, rows_written, "
                    "rows_finalized, final_rows_refused, applied_at) VALUES (%s, %s, %s, %s, %s, 0, 0, 0, %s)",
                    (run_id, query, batch_id, fingerprint, offsets, utc_now()))
    except pymysql.err.IntegrityError as exc:
        if exc.args[0] == _DUPLICATE_KEY:
            return False
        raise
    return True


def record_batch(cur: Any, query: str, fingerprint: str, counts: BatchCounts) -> None:
    """The figures of a batch claimed in this transaction."""
    cur.execute("UPDATE pipeline_batches SET rows_written = %s, rows_finalized = %s, trades_merged = %s, "
                "duplicates = %s, late_trades = %s, quarantined = %s, applied_at = %s "
                "WHERE query_name = %s AND fingerprint = %s",
                (counts.rows_written, counts.rows_finalized, counts.trades_merged, counts.duplicates,
                 counts.late_trades, counts.quarantined, utc_now(), query, fingerprint))


def run_totals(url: MysqlUrl, run_id: str) -> BatchCounts:
    """The ledger's sums for one checkpoint (a whole run, across restarts)."""
    with transaction(url) as cur:
        cur.execute("SELECT COALESCE(SUM(trades_merged), 0), COALESCE(SUM(duplicates), 0), "
                    "COALESCE(SUM(late_trades), 0), COALESCE(SUM(quarantined), 0), COALESCE(SUM(rows_written), 0), "
                    "COALESCE(SUM(rows_finalized), 0) FROM pipeline_batches WHERE run_id = %s", (run_id,))
        return BatchCounts(*(int(v) for v in cur.fetchone()))


def offsets_text(parts: Iterable[tuple[str, int, int, int]]) -> str:
    """The ``offsets`` a ledger row keeps of (topic, partition, first offset, last offset) per partition, sorted:
    "topic/p:a-b ..." (``read_ends`` reads it)."""
    return " ".join(f"{t}/{p}:{a}-{b}" for t, p, a, b in sorted(parts))


def read_ends(offsets_texts: list[str], topic: str) -> dict[int, int]:
    """Per partition of ``topic``, one past the highest offset the ledger's batches read ("topic/p:a-b ...")."""
    out: dict[int, int] = {}
    for text in offsets_texts:
        for part in (text or "").split():
            name, _, span = part.rpartition(":")
            where, _, partition = name.rpartition("/")
            if where != topic or not partition.isdigit() or "-" not in span:
                continue
            last = int(span.split("-")[1])
            out[int(partition)] = max(out.get(int(partition), 0), last + 1)
    return out
