"""What a run of the job committed, read back while it runs: its ledger rows as they are committed, the windows that
turned final, how many windows there are; and ledger rows of past batches written beforehand (the bench's month
of ledger). Typed rows, not dicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple, Self

from pipeline.adapters.mysql.connection import connect, transaction
from pipeline.core import times
from pipeline.settings import MysqlUrl


class LedgerEntry(NamedTuple):
    id: int  # in commit order
    run_id: str
    offsets: str  # "topic/partition:first-last ...": read with ledger.read_ends


class FinalWindow(NamedTuple):
    symbol: str
    start_ms: int


class WindowCounts(NamedTuple):
    windows: int
    final: int


def window_counts(url: MysqlUrl) -> WindowCounts:
    """The rows of ``moving_averages``, and how many of them are final."""
    with transaction(url) as cur:
        cur.execute("SELECT COUNT(*), COALESCE(SUM(is_final), 0) FROM moving_averages")
        windows, final = cur.fetchone()
        return WindowCounts(int(windows), int(final))


class RunReader:
    """One connection kept open for reads repeated every few ms (a login costs about 40 ms here), in autocommit:
    each read sees what was committed before it."""

    def __init__(self, url: MysqlUrl) -> None:
        self._conn = connect(url)
        self._conn.autocommit(True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def last_ledger_id(self) -> int:
        """The newest ledger row's id (0 for an empty ledger)."""
        with self._conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM pipeline_batches")
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def ledger_after(self, last_id: int) -> list[LedgerEntry]:
        """The ledger rows committed after row ``last_id``, in order."""
        with self._conn.cursor() as cur:
            cur.execute("SELECT id, run_id, offsets FROM pipeline_batches WHERE id > %s ORDER BY id", (last_id,))
            return [LedgerEntry(int(i), str(run), offsets or "") for i, run, offsets in cur.fetchall()]

    def final_windows(self) -> list[FinalWindow]:
        with self._conn.cursor() as cur:
            cur.execute("SELECT symbol, start_time FROM moving_averages WHERE is_final = 1")
            return [FinalWindow(str(symbol), times.ms(start)) for symbol, start in cur.fetchall()]


@dataclasses.dataclass(frozen=True)
class PastBatch:
    """A ledger row as the job writes it (schema of migrations.MIGRATIONS: keyed by the fingerprint of what the
    batch read)."""

    run_id: str
    query: str
    batch_id: int
    fingerprint: str
    offsets: str
    applied_ms: int
    rows_written: int
    trades_merged: int


def insert_batches(url: MysqlUrl, batches: Iterable[PastBatch], chunk: int = 2000) -> None:
    """``batches`` written into the ledger in one transaction, ``chunk`` rows a statement."""
    rows = list(batches)
    with transaction(url) as cur:
        for first in range(0, len(rows), chunk):
            cur.executemany("INSERT INTO pipeline_batches (run_id, query_name, batch_id, fingerprint, offsets, "
                            "rows_written, rows_finalized, final_rows_refused, applied_at, trades_merged) "
                            "VALUES (%s, %s, %s, %s, %s, %s, 0, 0, %s, %s)",
                            [(b.run_id, b.query, b.batch_id, b.fingerprint, b.offsets, b.rows_written,
                              times.utc(b.applied_ms), b.trades_merged) for b in rows[first:first + chunk]])
