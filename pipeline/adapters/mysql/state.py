"""The window state (``moving_averages``), coverage (``pipeline_coverage``), late counts and repairs: the steps of a
batch's transaction that touch windows. The numbers a final row holds are never rewritten (the upsert keeps them;
only ``late_trade_count`` may grow). ``VALUES(c)`` in ``ON DUPLICATE KEY UPDATE``: the form MySQL 8 and MariaDB both
accept, and the one PyMySQL's ``executemany`` turns into a single multi-row statement."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import pymysql

from pipeline.adapters.mysql.connection import RowAppeared
from pipeline.core import coverage
from pipeline.core.coverage import Range
from pipeline.core.merging import Stored
from pipeline.core.times import ms as _ms
from pipeline.core.times import utc, utc_now
from pipeline.core.windows import Accumulator, WindowRow

WINDOW_COLUMNS = ("symbol", "start_time", "end_time", "average_price", "open_price", "high_price", "low_price",
                  "close_price", "volume", "quote_volume", "vwap", "trade_count", "agg_trade_count", "is_final",
                  "late_trade_count", "updated_at")
_STATE_COLUMNS = ("price_sum", "agg_id_ranges")
_WRITTEN = (*WINDOW_COLUMNS[:-3], *_STATE_COLUMNS, "updated_at")
INSERT = f"INSERT INTO moving_averages ({', '.join(_WRITTEN)}) VALUES ({', '.join(['%s'] * len(_WRITTEN))})"
UPSERT = (
    INSERT + " ON DUPLICATE KEY UPDATE "
    # A final row keeps its numbers whatever a (mistaken) caller sends.
    + ", ".join(f"{c} = IF(is_final = 1, {c}, VALUES({c}))" for c in (*_WRITTEN[2:],))
)
DUPLICATE_KEY = 1062
KEY_CHUNK = 500  # keys per IN (...) lookup: statements stay far below any server's packet limit


def load_windows(cur: Any, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Stored]:
    """The stored state of these (symbol, start ms) windows, locked for the transaction."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, int], Stored] = {}
    for i in range(0, len(wanted), KEY_CHUNK):
        chunk = wanted[i:i + KEY_CHUNK]
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



def write_windows(cur: Any, rows: Sequence[tuple[WindowRow, Accumulator, Sequence[Range]]],
                  existing: Collection[tuple[str, int]] | None = None) -> int:
    """Write open windows with their merge state (``is_final`` is the finalize step's business). With ``existing``
    (the keys ``load_windows`` found, locked), the other rows are plain INSERTs: a row that appeared since the load
    (another writer's, committed; READ COMMITTED takes no gap locks) fails the statement with ``RowAppeared``, and
    the caller's retry merges into it, instead of overwriting it. Without, every row is upserted."""
    now = utc_now()
    params = [(r.symbol, utc(r.start_ms), utc(r.end_ms), r.average_price, r.open_price, r.high_price, r.low_price,
               r.close_price, r.volume, r.quote_volume, r.vwap, r.trade_count, r.agg_trade_count, acc.price_sum,
               coverage.render(ranges), now) for r, acc, ranges in rows]
    if existing is None:
        upserted, inserted = params, []
    else:
        known = set(existing)
        upserted = [p for p, (r, _, _) in zip(params, rows, strict=True) if (r.symbol, r.start_ms) in known]
        inserted = [p for p, (r, _, _) in zip(params, rows, strict=True) if (r.symbol, r.start_ms) not in known]
    if upserted:
        cur.executemany(UPSERT, upserted)
    if inserted:
        try:
            cur.executemany(INSERT, inserted)
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == DUPLICATE_KEY:
                raise RowAppeared(f"a window row appeared after it was read: {exc.args[-1]}") from exc
            raise
    return len(params)


def repair_window(cur: Any, row: WindowRow, acc: Accumulator, ranges: Sequence[Range], reason: str) -> None:
    """Replace (symbol, minute) with ``row``, final, and record why and what it held before, in the caller's
    transaction. Only a repair may rewrite a final row: the upsert never does."""
    key = (row.symbol, utc(row.start_ms))
    before = _take_window(cur, key)
    write_windows(cur, [(row, acc, ranges)])
    cur.execute("UPDATE moving_averages SET is_final = 1 WHERE symbol = %s AND start_time = %s", key)
    cur.execute("INSERT INTO pipeline_repairs (symbol, start_time, reason, row_before, repaired_at) "
                "VALUES (%s, %s, %s, %s, %s)", (*key, reason[:1000], before, utc_now()))


def remove_window(cur: Any, symbol: str, start_ms: int, reason: str) -> None:
    """Delete (symbol, minute), recording why and what it held, in the caller's transaction."""
    key = (symbol, utc(start_ms))
    before = _take_window(cur, key)
    cur.execute("INSERT INTO pipeline_repairs (symbol, start_time, reason, row_before, repaired_at) "
                "VALUES (%s, %s, %s, %s, %s)", (*key, reason[:1000], before, utc_now()))


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
    params = [(n, utc_now(), symbol, utc(start)) for symbol, start, n in late if n]
    if params:
        cur.executemany("UPDATE moving_averages SET late_trade_count = late_trade_count + %s, updated_at = %s "
                        "WHERE symbol = %s AND start_time = %s", params)


def add_late_ids(cur: Any, ids: Sequence[tuple[str, int, int]]) -> set[tuple[str, int]]:
    """Record late trades (symbol, agg id, window start ms) once; the (symbol, agg id) not recorded before. A row
    another writer inserted since the read (no gap lock under READ COMMITTED) raises ``RowAppeared``: run again."""
    wanted = sorted({(symbol, agg_id): start for symbol, agg_id, start in ids}.items())
    known: set[tuple[str, int]] = set()
    for i in range(0, len(wanted), KEY_CHUNK):
        chunk = [key for key, _ in wanted[i:i + KEY_CHUNK]]
        cur.execute("SELECT symbol, agg_id FROM pipeline_late_trades WHERE (symbol, agg_id) IN "
                    f"({', '.join(['(%s, %s)'] * len(chunk))}) FOR UPDATE", [v for key in chunk for v in key])
        known.update((symbol, int(agg_id)) for symbol, agg_id in cur.fetchall())
    fresh = [(symbol, agg_id, utc(start), utc_now()) for (symbol, agg_id), start in wanted
             if (symbol, agg_id) not in known]
    if fresh:
        try:
            cur.executemany("INSERT INTO pipeline_late_trades (symbol, agg_id, start_time, recorded_at) "
                            "VALUES (%s, %s, %s, %s)", fresh)
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == DUPLICATE_KEY:
                raise RowAppeared(f"a late trade was recorded after it was read: {exc.args[-1]}") from exc
            raise
    return {(symbol, agg_id) for symbol, agg_id, _, _ in fresh}


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
        try:
            cur.executemany("INSERT INTO pipeline_coverage (symbol, first_ms, last_ms) VALUES (%s, %s, %s)",
                            [(symbol, a, b) for a, b in added])
        except pymysql.err.IntegrityError as exc:  # another writer's range, committed since the load
            if exc.args and exc.args[0] == DUPLICATE_KEY:
                raise RowAppeared(f"a coverage range of {symbol} appeared after it was read: {exc.args[-1]}") from exc
            raise


def finalize_new(cur: Any, symbol: str, spans: Sequence[tuple[int, int, int]]) -> int:
    """Mark final every open window of ``symbol`` in ``spans`` (``coverage.newly_final``: first start, last start,
    end limit): the windows the coverage a batch added may have completed."""
    now, finalized = utc_now(), 0
    for first_start, last_start, end_limit in spans:
        finalized += cur.execute("UPDATE moving_averages SET is_final = 1, updated_at = %s WHERE symbol = %s "
                                 "AND is_final = 0 AND start_time >= %s AND start_time <= %s AND end_time <= %s",
                                 (now, symbol, utc(first_start), utc(last_start), utc(end_limit)))
    return finalized

