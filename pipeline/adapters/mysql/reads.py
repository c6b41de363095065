"""Reads: the rows and figures that report, status, reconcile, the demo and the bench show, as typed rows."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pipeline.adapters.checkpoint import QUERY
from pipeline.adapters.mysql.connection import transaction
from pipeline.adapters.mysql.state import WINDOW_COLUMNS
from pipeline.core import times
from pipeline.core.windows import StoredWindow
from pipeline.settings import MysqlUrl


def _records(cur: Any) -> list[StoredWindow]:
    """Rows selected as ``WINDOW_COLUMNS`` (start and end as ms, exactly; ``is_final`` as a bool)."""
    return [StoredWindow(r[0], times.ms(r[1]), times.ms(r[2]), average_price=r[3], open_price=r[4], high_price=r[5],
                         low_price=r[6], close_price=r[7], volume=r[8], quote_volume=r[9], vwap=r[10],
                         trade_count=int(r[11]), agg_trade_count=int(r[12]), is_final=bool(r[13]),
                         late_trade_count=int(r[14]), updated_at=r[15]) for r in cur.fetchall()]


def read_windows(url: MysqlUrl, symbol: str | None = None) -> list[StoredWindow]:
    """Every row of ``moving_averages`` (or one symbol's), by symbol and start."""
    with transaction(url) as cur:
        where, params = ("WHERE symbol = %s", (symbol,)) if symbol else ("", ())
        cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages {where} ORDER BY symbol, start_time",
                    params)
        return _records(cur)


def windows_between(url: MysqlUrl, symbol: str, start_ms: int, end_ms: int) -> dict[int, StoredWindow]:
    """One symbol's rows with ``start_ms <= start < end_ms``, by start ms."""
    with transaction(url) as cur:
        cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages WHERE symbol = %s "
                    "AND start_time >= %s AND start_time < %s ORDER BY start_time",
                    (symbol, times.utc(start_ms), times.utc(end_ms)))
        return {r.start_ms: r for r in _records(cur)}


@dataclasses.dataclass(frozen=True)
class LastBatch:
    batch_id: int
    applied_at: datetime  # naive UTC
    trades_merged: int


@dataclasses.dataclass(frozen=True)
class StatusFigures:
    """What ``pipeline status`` shows from MySQL."""

    windows_open: int
    windows_final: int
    late_trades: int
    quarantined: int
    ledger_offsets: list[str]  # the newest 200 batches' offsets, newest first (``ledger.read_ends`` reads them)
    last_batch: LastBatch | None
    coverage: list[tuple[str, int]]  # per symbol, the end (ms) of its newest coverage


def status_figures(url: MysqlUrl) -> StatusFigures:
    with transaction(url) as cur:
        cur.execute("SELECT is_final, COUNT(*), COALESCE(SUM(late_trade_count), 0) FROM moving_averages "
                    "GROUP BY is_final")
        counts = {bool(final): (int(n), int(late)) for final, n, late in cur.fetchall()}
        cur.execute("SELECT COUNT(*) FROM quarantine")
        quarantined = int(cur.fetchone()[0])
        cur.execute("SELECT batch_id, applied_at, offsets, trades_merged FROM pipeline_batches "
                    "WHERE query_name = %s ORDER BY id DESC LIMIT 200", (QUERY,))
        batches = cur.fetchall()
        cur.execute("SELECT symbol, MAX(last_ms) FROM pipeline_coverage GROUP BY symbol ORDER BY symbol")
        coverage = [(str(s), int(last)) for s, last in cur.fetchall()]
    return StatusFigures(
        windows_open=counts.get(False, (0, 0))[0], windows_final=counts.get(True, (0, 0))[0],
        late_trades=sum(late for _, late in counts.values()), quarantined=quarantined,
        ledger_offsets=[row[2] for row in batches],
        last_batch=LastBatch(int(batches[0][0]), batches[0][1], int(batches[0][3])) if batches else None,
        coverage=coverage)
