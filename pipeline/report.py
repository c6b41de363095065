"""What a person looks at: a terminal table of the latest windows per symbol, and a chart per symbol (PNG, and a
self-contained interactive HTML page: hover a candle for its figures) with 1-minute candles, the average price and
the VWAP.

What is shown: ``--symbol`` and ``--since``/``--until`` when given, else the newest *stretch*: the windows after
the last gap of more than ``STRETCH_GAP`` with no window of any symbol (so rows of an older replay or an outage
never stretch the axis over days of nothing). Lines are never drawn across a missing minute.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.windows import StoredWindow

Row = StoredWindow
STRETCH_GAP = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def newest_stretch(rows: Sequence[Row]) -> list[Row]:
    """The rows after the newest gap longer than ``STRETCH_GAP`` in which no symbol has a window."""
    starts = sorted({r.start_time for r in rows})
    if not starts:
        return []
    begin = starts[0]
    for earlier, later in zip(starts, starts[1:], strict=False):
        if later - earlier > STRETCH_GAP:
            begin = later
    return [r for r in rows if r.start_time >= begin]


def select(rows: Sequence[Row], symbol: str | None = None, minutes: int | None = None,
           since: datetime | None = None, until: datetime | None = None) -> list[Row]:
    """Rows of one symbol (or all) in ``[since, until)``, or (neither given) the newest stretch; then limited to
    each symbol's latest ``minutes`` windows."""
    chosen = [r for r in rows if symbol is None or r.symbol == symbol]
    if since is None and until is None:
        chosen = newest_stretch(chosen)
    else:
        chosen = [r for r in chosen if (since is None or r.start_time >= since)
                  and (until is None or r.start_time < until)]
    if minutes is None:
        return chosen
    latest: dict[str, datetime] = {}
    for r in chosen:
        latest[r.symbol] = max(latest.get(r.symbol, r.start_time), r.start_time)
    return [r for r in chosen if r.start_time > latest[r.symbol] - timedelta(minutes=minutes)]


def segments(rows: Sequence[Row]) -> list[list[Row]]:
    """One symbol's rows in runs of consecutive minutes: a line is drawn within a run, never across a gap."""
    runs: list[list[Row]] = []
    for r in sorted(rows, key=lambda r: r.start_time):
        if runs and r.start_time - runs[-1][-1].start_time == MINUTE:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def _late(rows: Sequence[Row]) -> int:
    return sum(r.late_trade_count for r in rows)


def _title(symbol: str, mine: Sequence[Row]) -> str:
    open_n = sum(1 for r in mine if not r.is_final)
    late = _late(mine)
    parts = [f"{len(mine)} minutes", f"{open_n} open (faded)" if open_n else "all final"]
    if late:
        parts.append(f"{late} late trades refused")
    return f"{symbol}: {', '.join(parts)}"


def _num(value: Any, places: int) -> str:
    return f"{value:,.{places}f}"


def _finality(row: Row) -> str:
    """A final window that refused late trades is never shown as simply complete."""
    late = row.late_trade_count
    if not row.is_final:
        return "open"
    return f"yes, {late} late" if late else "yes"


def table(rows: Sequence[Row], per_symbol: int = 3) -> str:
    """The latest ``per_symbol`` windows of each symbol as a fixed-width text table."""
    header = ("symbol", "minute (UTC)", "final", "trades", "open", "high", "low", "close", "avg price", "vwap",
              "volume")
    lines = []
    for symbol in sorted({r.symbol for r in rows}):
        mine = sorted((r for r in rows if r.symbol == symbol), key=lambda r: r.start_time)[-per_symbol:]
        for r in mine:
            places = 2 if r.close_price >= 100 else 4 if r.close_price >= 1 else 6
            lines.append((
                symbol, r.start_time.strftime("%Y-%m-%d %H:%M"), _finality(r),
                str(r.trade_count), _num(r.open_price, places), _num(r.high_price, places),
                _num(r.low_price, places), _num(r.close_price, places), _num(r.average_price, places + 2),
                _num(r.vwap, places + 2), _num(r.volume, 4),
            ))
    if not lines:
        return "(no windows in moving_averages yet)"
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in pairs)  # text left, numbers right

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)])


def _figure(rows: Sequence[Row]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    symbols = sorted({r.symbol for r in rows})
    fig, axes = plt.subplots(len(symbols), 1, figsize=(12, 3.2 * len(symbols)), squeeze=False)
    for ax, symbol in zip(axes[:, 0], symbols, strict=True):
        mine = sorted((r for r in rows if r.symbol == symbol), key=lambda r: r.start_time)
        span = mine[-1].start_time - mine[0].start_time + MINUTE
        width = MINUTE * 0.7 if span <= timedelta(hours=6) else MINUTE  # days of candles: each one a sliver
        for r in mine:
            t = r.start_time + timedelta(seconds=30)
            up = r.close_price >= r.open_price
            color = "#26a69a" if up else "#ef5350"
            ax.vlines(t, float(r.low_price), float(r.high_price), color=color, linewidth=1)
            low, high = sorted((float(r.open_price), float(r.close_price)))
            ax.bar(t, max(high - low, 1e-12), width=width, bottom=low, color=color,
                   alpha=1.0 if r.is_final else 0.35, edgecolor=color)
        for n, run in enumerate(segments(mine)):  # never across a gap
            centers = [r.start_time + timedelta(seconds=30) for r in run]
            ax.plot(centers, [float(r.average_price) for r in run], color="#1e88e5", linewidth=1.4,
                    label="average price" if n == 0 else None)
            ax.plot(centers, [float(r.vwap) for r in run], color="#fb8c00", linewidth=1.4, linestyle="--",
                    label="VWAP" if n == 0 else None)
        ax.set_title(_title(symbol, mine), loc="left", fontsize=11)
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # dates where the day changes
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylabel("USDT" if symbol.endswith("USDT") else symbol[-3:])
    axes[-1, 0].set_xlabel("UTC")
    fig.tight_layout()
    return fig


def _svg_panel(symbol: str, mine: Sequence[Row], width: int = 1100, height: int = 260) -> str:
    """One symbol as inline SVG: candles with a tooltip each (hover), average and VWAP lines split at gaps."""
    mine = sorted(mine, key=lambda r: r.start_time)
    left, right, top, bottom = 70, 10, 10, 30
    t0, t1 = mine[0].start_time, mine[-1].start_time + MINUTE
    lows = [float(r.low_price) for r in mine]
    highs = [float(r.high_price) for r in mine]
    p0, p1 = min(lows), max(highs)
    if p1 == p0:
        p0, p1 = p0 - 1e-8, p1 + 1e-8
    span_s = max((t1 - t0).total_seconds(), 60.0)

    def x(t: datetime) -> float:
        return left + (t - t0).total_seconds() / span_s * (width - left - right)

    def y(price: Any) -> float:
        return top + (p1 - float(price)) / (p1 - p0) * (height - top - bottom)

    bar = max((width - left - right) * 60 / span_s * 0.7, 0.6)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
             f"<text x='4' y='{top + 10}' font-size='11'>{p1:,.8g}</text>",
             f"<text x='4' y='{height - bottom}' font-size='11'>{p0:,.8g}</text>",
             f"<text x='{left}' y='{height - 8}' font-size='11'>{t0:%Y-%m-%d %H:%M}</text>",
             f"<text x='{width - right}' y='{height - 8}' font-size='11' text-anchor='end'>{t1:%Y-%m-%d %H:%M} "
             "UTC</text>"]
    for r in mine:
        cx = x(r.start_time + timedelta(seconds=30))
        color = "#26a69a" if r.close_price >= r.open_price else "#ef5350"
        top_body, bottom_body = sorted((y(r.open_price), y(r.close_price)))
        tip = html.escape(
            f"{symbol} {r.start_time:%Y-%m-%d %H:%M} UTC ({'final' if r.is_final else 'open'})\n"
            f"open {r.open_price}  high {r.high_price}  low {r.low_price}  close {r.close_price}\n"
            f"average {r.average_price:.8f}  VWAP {r.vwap:.8f}\n"
            f"volume {r.volume}  trades {r.trade_count}  aggTrades {r.agg_trade_count}"
            + (f"  late {r.late_trade_count}" if r.late_trade_count else ""))
        opacity = "1" if r.is_final else "0.35"
        parts.append(f"<g opacity='{opacity}'><title>{tip}</title>"
                     f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{y(r.high_price):.1f}' y2='{y(r.low_price):.1f}' "
                     f"stroke='{color}'/><rect x='{cx - bar / 2:.1f}' y='{top_body:.1f}' width='{bar:.1f}' "
                     f"height='{max(bottom_body - top_body, 0.8):.1f}' fill='{color}'/></g>")
    for column, color, dash in (("average_price", "#1e88e5", ""), ("vwap", "#fb8c00", " stroke-dasharray='4 3'")):
        for run in segments(mine):
            points = " ".join(f"{x(r.start_time + timedelta(seconds=30)):.1f},{y(getattr(r, column)):.1f}" for r in run)
            parts.append(f"<polyline points='{points}' fill='none' stroke='{color}' stroke-width='1.4'{dash}/>")
    parts.append("</svg>")
    return "".join(parts)


def write_charts(rows: Sequence[Row], out_dir: Path) -> tuple[Path, Path]:
    """``moving_averages.png`` and ``moving_averages.html`` (PNG embedded, plus the table) in ``out_dir``."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png, page = out_dir / "moving_averages.png", out_dir / "moving_averages.html"
    fig = _figure(rows)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    png.write_bytes(buffer.getvalue())
    encoded = base64.b64encode(buffer.getvalue()).decode()
    panels = "".join(
        f"<h2>{html.escape(_title(symbol, mine))}</h2>{_svg_panel(symbol, mine)}"
        for symbol in sorted({r.symbol for r in rows})
        for mine in [[r for r in rows if r.symbol == symbol]])
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>moving_averages</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}pre{background:#f6f8fa;padding:1em;"
        "overflow-x:auto}svg{background:#fff;border:1px solid #ddd}h2{font-size:1em;margin:1.5em 0 .3em}"
        "</style></head><body><h1>1-minute windows from <code>moving_averages</code></h1>"
        "<p>Hover a candle for its figures. Faded candles: minutes still open. Blue: average price; orange, "
        "dashed: VWAP; lines stop at missing minutes.</p>"
        f"{panels}<h2>Latest windows</h2><pre>{html.escape(table(rows, per_symbol=5))}</pre>"
        f"<details><summary>The same as a picture</summary><img alt='candles, average price and VWAP per symbol' "
        f"src='data:image/png;base64,{encoded}'></details></body></html>"
    )
    return png, page
