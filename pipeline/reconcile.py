"""``pipeline reconcile``: each final window of a symbol and range against Binance's 1m klines.

    klines (1,000 minutes a request, weight 2)  +  windows from MySQL (read-only account)
    -> core.reconcile.compare per minute -> table or JSON -> exit 0 only when everything final matches

What it proves: for every minute in the range, the table's open, high, low, close, volume, quote volume (to the
kline's 8 places) and trade count are the exchange's own. Open windows are listed, not judged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.core import reconcile
from pipeline.core.windows import WINDOW_MS
from pipeline.settings import MysqlUrl

PAGE_MINUTES = 1000


def fetch_klines(client: Any, symbol: str, start_ms: int, end_ms: int) -> dict[int, reconcile.Kline]:
    """Every kline opening in ``[start_ms, end_ms)``, paged by 1,000 minutes."""
    out: dict[int, reconcile.Kline] = {}
    cursor = start_ms
    while cursor < end_ms:
        last = min(cursor + PAGE_MINUTES * WINDOW_MS, end_ms) - 1
        page = [reconcile.parse_kline(symbol, raw) for raw in client.klines(symbol, cursor, last, PAGE_MINUTES)]
        for kline in page:
            if start_ms <= kline.start_ms < end_ms:
                out[kline.start_ms] = kline
        cursor = last + 1
    return out


def recorded_range(cassette: Path, symbol: str) -> tuple[int, int]:
    """The minutes a recording holds klines of ``symbol`` for (what ``pipeline record`` asked at its end)."""
    import yaml

    from pipeline.errors import InputError

    try:
        uris = [i["request"]["uri"] for i in yaml.safe_load(cassette.read_text())["interactions"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{cassette}: not a readable vcrpy cassette ({type(exc).__name__})") from exc
    spans = []
    for uri in uris:
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        if parts.path.endswith("/klines") and query.get("symbol") == [symbol]:
            spans.append((int(query["startTime"][0]), int(query["endTime"][0]) + 1))
    if not spans:
        raise InputError(f"{cassette}: no klines of {symbol} recorded (recorded by an older `pipeline record`?)")
    return min(s for s, _ in spans), max(e for _, e in spans)


def read_windows(url: MysqlUrl, symbol: str, start_ms: int, end_ms: int) -> dict[int, dict[str, Any]]:
    from pipeline.adapters.mysql import connection, state
    from pipeline.core import times

    with connection.transaction(url) as cur:
        cur.execute(f"SELECT {', '.join(state.WINDOW_COLUMNS)} FROM moving_averages WHERE symbol = %s "
                    "AND start_time >= %s AND start_time < %s ORDER BY start_time",
                    (symbol, times.utc(start_ms), times.utc(end_ms)))
        rows = [dict(zip(state.WINDOW_COLUMNS, row, strict=True)) for row in cur.fetchall()]
    return {int(r["start_time"].replace(tzinfo=UTC).timestamp() * 1000): r for r in rows}


def run(client: Any, url: MysqlUrl, symbol: str, start_ms: int, end_ms: int) -> list[reconcile.Minute]:
    klines = fetch_klines(client, symbol, start_ms, end_ms)
    return reconcile.compare(symbol, read_windows(url, symbol, start_ms, end_ms), klines, start_ms, end_ms)


def minute_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def summary(minutes: Sequence[reconcile.Minute]) -> dict[str, int]:
    counts = {status: 0 for status in ("match", "mismatch", "missing_in_table", "missing_at_exchange", "open")}
    for m in minutes:
        counts[m.status] += 1
    return counts


def as_json(symbol: str, start_ms: int, end_ms: int, minutes: Sequence[reconcile.Minute]) -> str:
    return json.dumps({
        "symbol": symbol, "since": minute_text(start_ms), "until": minute_text(end_ms), "summary": summary(minutes),
        "ok": reconcile.all_match(minutes),
        "minutes": [{"start": minute_text(m.start_ms), "status": m.status,
                     "differences": [{"column": d.column, "table": str(d.table), "exchange": str(d.exchange),
                                      "by": str(d.by)} for d in m.differences]}
                    for m in minutes if m.status != "match"],
    }, indent=2)


def as_text(symbol: str, start_ms: int, end_ms: int, minutes: Sequence[reconcile.Minute]) -> str:
    counts = summary(minutes)
    lines = [f"reconcile {symbol} {minute_text(start_ms)} .. {minute_text(end_ms)} UTC against Binance 1m klines: "
             + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())]
    for m in minutes:
        if m.status == "match":
            continue
        if m.differences:
            detail = "; ".join(f"{d.column} table {d.table} exchange {d.exchange} (by {d.by})" for d in m.differences)
        else:
            detail = {"missing_in_table": "the exchange traded, the table has no window",
                      "missing_at_exchange": "the table has a final window, the exchange no trade",
                      "open": "window still open: not judged"}[m.status]
        lines.append(f"  {minute_text(m.start_ms)}  {m.status:<19} {detail}")
    lines.append("OK: every final minute matches" if reconcile.all_match(minutes) else "MISMATCHES found")
    return "\n".join(lines)


REPAIRABLE = ("mismatch", "missing_in_table", "missing_at_exchange")


def minute_trades(client: Any, symbol: str, start_ms: int) -> list[Any]:
    """Every valid aggTrade of one minute, fetched by time (``poller.trades_between``)."""
    from pipeline.core.counters import Counters
    from pipeline.core.trades import invalid_reason
    from pipeline.poller import trades_between

    return [t for t in trades_between(client, symbol, start_ms, start_ms + WINDOW_MS, Counters())
            if invalid_reason(t) is None]


def repair(client: Any, url: MysqlUrl, minutes: Sequence[reconcile.Minute]) -> list[tuple[reconcile.Minute, str]]:
    """Rewrite each minute that did not match from the exchange's own trades, through the reference aggregator,
    one transaction per minute (the rewrite and its record in ``pipeline_repairs``). Returns what was done."""
    from pipeline.adapters.mysql import connection
    from pipeline.core import windows
    from pipeline.core.trades import id_ranges

    done = []
    for minute in (m for m in minutes if m.status in REPAIRABLE):
        trades = minute_trades(client, minute.symbol, minute.start_ms)
        reason = minute.status + (": " + ", ".join(f"{d.column} by {d.by}" for d in minute.differences)
                                  if minute.differences else "")
        acc = windows.initialize()
        for trade in sorted({t.agg_id: t for t in trades}.values(), key=lambda t: t.agg_id):
            acc = windows.add(acc, trade)
        what = f"repair {minute.symbol} {minute_text(minute.start_ms)}"
        if not trades:  # the exchange has no trade in this minute: neither may the table
            connection.with_retries(url, functools.partial(_remove, minute, reason), what)
            done.append((minute, "removed: the exchange has no trade in it"))
            continue
        row = windows.result(minute.symbol, minute.start_ms, acc)
        # Repeatable, so retried like a batch when it meets the running stream's locks (deadlock, lock wait).
        connection.with_retries(url, functools.partial(_rewrite, row, acc, id_ranges(t.agg_id for t in trades),
                                                        reason), what)
        done.append((minute, f"rewritten from {len(trades)} aggTrades ({row.trade_count} trades)"))
    return done


def _remove(minute: reconcile.Minute, reason: str, cur: Any) -> None:
    from pipeline.adapters.mysql import state

    state.remove_window(cur, minute.symbol, minute.start_ms, reason)


def _rewrite(row: Any, acc: Any, ranges: Any, reason: str, cur: Any) -> None:
    from pipeline.adapters.mysql import state

    state.repair_window(cur, row, acc, ranges, reason)
