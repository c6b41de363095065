"""``pipeline report``: a table and a chart of what ``moving_averages`` holds, read as the read-only account."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from pipeline.commands import args as checks
from pipeline.commands.context import Context
from pipeline.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="table and chart of what is in moving_averages")
    p.add_argument("--symbol", type=str.upper)
    p.add_argument("--since", help="first minute shown, ISO UTC (e.g. 2026-01-01T12:00); with neither --since nor "
                                    "--until: the newest stretch of data (after the last gap of over an hour)")
    p.add_argument("--until", help="end of the range shown (exclusive), ISO UTC")
    p.add_argument("--minutes", type=int, help="only each symbol's latest N minutes (of the range)")
    p.add_argument("--out-dir", default="out", help="where the PNG and HTML go (default: ./out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    since, until = checks.utc_time(args.since, "--since"), checks.utc_time(args.until, "--until")
    if since and until and since >= until:
        raise ConfigError("--since must be before --until")
    if args.minutes is not None and args.minutes < 1:
        raise ConfigError("--minutes must be at least 1")
    return show(ctx, args.symbol, args.minutes, Path(args.out_dir), since, until)


def show(ctx: Context, symbol: str | None, minutes: int | None, out_dir: Path, since: datetime | None = None,
         until: datetime | None = None) -> int:
    """Print the table, write the chart and page; 1 when there is nothing to show."""
    from pipeline import report
    from pipeline.adapters.mysql import reads

    rows = report.select(reads.read_windows(ctx.mysql_read_url(), symbol), symbol, minutes, since, until)
    print(report.table(rows))
    if not rows:
        return 1
    png, page = report.write_charts(rows, out_dir)
    print(f"\nchart: {png.resolve()}\npage:  {page.resolve()}")
    return 0
