"""``pipeline reconcile``: each final window of a symbol and range against Binance's 1m klines.

    klines (1,000 minutes a request, weight 2)  +  windows from MySQL (read-only account)
    -> core.reconcile.compare per minute -> table or JSON -> exit 0 only when everything final matches

What it proves: for every minute in the range, the table's open, high, low, close, volume, quote volume (to the
kline's 8 places) and trade count are the exchange's own. Open windows are listed, not judged.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.commands import args as checks
from pipeline.commands.context import Context
from pipeline.core import reconcile, times
from pipeline.core.windows import WINDOW_MS
from pipeline.errors import ConfigError
from pipeline.settings import MysqlUrl

PAGE_MINUTES = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconcile", help="compare each final window with Binance's 1m klines; exit 0 only when "
                                         "every final minute matches")
    p.add_argument("--symbol", type=str.upper, required=True)
    p.add_argument("--since", help="first minute, ISO UTC (e.g. 2026-01-01T12:00)")
    p.add_argument("--until", help="end of the range (exclusive), ISO UTC (default: now)")
    p.add_argument("--minutes", type=int, help="the last N whole minutes")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--cassette", help="take the klines from a recording (`pipeline record` keeps them), for the "
                                      "range it holds: no network")
    p.add_argument("--repair", action="store_true", help="rewrite each minute that does not match from the "
                   "exchange's aggTrades (reference aggregator, one transaction each, recorded in pipeline_repairs), "
                   "then compare again")
    p.add_argument("--base-url", default=checks.EXCHANGE, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.adapters import cassettes

    checks.symbol(args.symbol)
    cassette = Path(args.cassette) if args.cassette else None
    if cassette is not None and args.repair:
        raise ConfigError("--repair needs the exchange itself, not a recording")
    start_ms, end_ms = _range(args, cassette, ctx.settings.watermark_seconds)
    client, reader = ctx.exchange(args.base_url), ctx.mysql_read_url()
    if cassette is not None:
        with cassettes.playback(cassette):
            minutes = compare(client, reader, args.symbol, start_ms, end_ms)
    else:
        minutes = compare(client, reader, args.symbol, start_ms, end_ms)
    show = as_json if args.json else as_text
    if not args.repair or reconcile.all_match(minutes):
        print(show(args.symbol, start_ms, end_ms, minutes))
        return 0 if reconcile.all_match(minutes) else 1
    if not args.json:
        print(show(args.symbol, start_ms, end_ms, minutes))
    return _repair_and_compare(args, ctx, client, (start_ms, end_ms), minutes)


def _range(args: argparse.Namespace, cassette: Path | None, watermark_s: int) -> tuple[int, int]:
    """The whole, settled minutes to compare: the recording's, ``--since``/``--until`` or the last ``--minutes``."""
    if cassette is not None:
        if args.minutes is not None or args.since is not None or args.until is not None:
            raise ConfigError("--cassette takes the range the recording holds klines for: no --since/--minutes")
        start_ms, end_ms = recorded_range(cassette, args.symbol)
    elif (args.minutes is None) == (args.since is None):
        raise ConfigError("give --since (with --until, default now) or --minutes N (the last N whole minutes)")
    elif args.since is not None:
        since = checks.utc_ms(args.since, "--since")
        assert since is not None
        start_ms, end_ms = since, checks.utc_ms(args.until, "--until") or checks.now_ms()
    else:
        if args.until is not None or not 1 <= args.minutes <= 100_000:
            raise ConfigError("--minutes takes 1 to 100000, without --until")
        end_ms = checks.now_ms()
        start_ms = end_ms - end_ms % WINDOW_MS - args.minutes * WINDOW_MS
    # Only settled minutes: trades reach Binance's REST up to PIPELINE_WATERMARK_SECONDS late, and the producer
    # declares a minute complete only after that (a younger minute would be judged before it could be final).
    if cassette is None:
        end_ms = min(end_ms, int(time.time() * 1000) - watermark_s * 1000)
    start_ms -= start_ms % WINDOW_MS
    end_ms -= end_ms % WINDOW_MS  # whole minutes only
    if end_ms <= start_ms:
        raise ConfigError("the range holds no whole minute")
    return start_ms, end_ms


def _repair_and_compare(args: argparse.Namespace, ctx: Context, client: Any, span: tuple[int, int],
                        minutes: list[reconcile.Minute]) -> int:
    """Rewrite what did not match, compare again, and print both (one JSON document: before, repaired, after)."""
    from pipeline.adapters.mysql import migrations

    writer, (start_ms, end_ms) = ctx.mysql_url(), span
    migrations.ensure_schema(writer, ctx.mysql_admin_url())  # pipeline_repairs
    repaired = repair(client, writer, minutes)
    after = compare(client, ctx.mysql_read_url(), args.symbol, start_ms, end_ms)
    if args.json:
        print(json.dumps({"before": json.loads(as_json(args.symbol, start_ms, end_ms, minutes)),
                          "repaired": [{"start": minute_text(m.start_ms), "status": m.status, "done": what}
                                       for m, what in repaired],
                          "after": json.loads(as_json(args.symbol, start_ms, end_ms, after))}, indent=2))
    else:
        for minute, what in repaired:
            print(f"repaired {minute_text(minute.start_ms)} ({minute.status}): {what}")
        print(as_text(args.symbol, start_ms, end_ms, after))
    return 0 if reconcile.all_match(after) else 1


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


def compare(client: Any, url: MysqlUrl, symbol: str, start_ms: int, end_ms: int) -> list[reconcile.Minute]:
    """Every minute of the range: the table's window (read-only account) against the exchange's kline."""
    from pipeline.adapters.mysql import reads

    klines = fetch_klines(client, symbol, start_ms, end_ms)
    return reconcile.compare(symbol, reads.windows_between(url, symbol, start_ms, end_ms), klines, start_ms, end_ms)


def minute_text(ms: int) -> str:
    return times.utc(ms).strftime("%Y-%m-%d %H:%M")


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
