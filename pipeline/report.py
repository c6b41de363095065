"""What a person looks at: a terminal table of the latest windows per symbol, and a chart (PNG and a
self-contained HTML page) with 1-minute candles, the average price and the VWAP for each symbol."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def select(rows: Sequence[Row], symbol: str | None = None, minutes: int | None = None) -> list[Row]:
    """Rows of one symbol (or all), limited to each symbol's latest ``minutes`` windows."""
    chosen = [r for r in rows if symbol is None or r["symbol"] == symbol]
    if minutes is None:
        return chosen
    latest: dict[str, datetime] = {}
    for r in chosen:
        latest[r["symbol"]] = max(latest.get(r["symbol"], r["start_time"]), r["start_time"])
    return [r for r in chosen if r["start_time"] > latest[r["symbol"]] - timedelta(minutes=minutes)]


def _num(value: Any, places: int) -> str:
    return f"{value:,.{places}f}"


def _finality(row: Row) -> str:
    """A final window that refused late trades is never shown as simply complete."""
    late = int(row.get("late_trade_count") or 0)
    if not row["is_final"]:
        return "open"
    return f"yes, {late} late" if late else "yes"


def table(rows: Sequence[Row], per_symbol: int = 3) -> str:
    """The latest ``per_symbol`` windows of each symbol as a fixed-width text table."""
    header = ("symbol", "minute (UTC)", "final", "trades", "open", "high", "low", "close", "avg price", "vwap",
              "volume")
    lines = []
    for symbol in sorted({r["symbol"] for r in rows}):
        mine = sorted((r for r in rows if r["symbol"] == symbol), key=lambda r: r["start_time"])[-per_symbol:]
        for r in mine:
            places = 2 if r["close_price"] >= 100 else 4 if r["close_price"] >= 1 else 6
            lines.append((
                symbol, r["start_time"].strftime("%Y-%m-%d %H:%M"), _finality(r),
                str(r["trade_count"]), _num(r["open_price"], places), _num(r["high_price"], places),
                _num(r["low_price"], places), _num(r["close_price"], places), _num(r["average_price"], places + 2),
                _num(r["vwap"], places + 2), _num(r["volume"], 4),
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

    symbols = sorted({r["symbol"] for r in rows})
    fig, axes = plt.subplots(len(symbols), 1, figsize=(12, 3.2 * len(symbols)), squeeze=False)
    width = timedelta(seconds=40)
    for ax, symbol in zip(axes[:, 0], symbols, strict=True):
        mine = sorted((r for r in rows if r["symbol"] == symbol), key=lambda r: r["start_time"])
        for r in mine:
            t = r["start_time"] + timedelta(seconds=30)
            up = r["close_price"] >= r["open_price"]
            color = "#26a69a" if up else "#ef5350"
            ax.vlines(t, float(r["low_price"]), float(r["high_price"]), color=color, linewidth=1)
            low, high = sorted((float(r["open_price"]), float(r["close_price"])))
            ax.bar(t, max(high - low, 1e-12), width=width, bottom=low, color=color,
                   alpha=1.0 if r["is_final"] else 0.45, edgecolor=color)
        centers = [r["start_time"] + timedelta(seconds=30) for r in mine]
        ax.plot(centers, [float(r["average_price"]) for r in mine], color="#1e88e5", linewidth=1.4,
                label="average price")
        ax.plot(centers, [float(r["vwap"]) for r in mine], color="#fb8c00", linewidth=1.4, linestyle="--",
                label="VWAP")
        ax.set_title(f"{symbol}: 1-minute windows (faded candles: still open)", loc="left", fontsize=11)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylabel("USDT" if symbol.endswith("USDT") else symbol[-3:])
    axes[-1, 0].set_xlabel("UTC")
    fig.tight_layout()
    return fig


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
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>moving_averages</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}pre{background:#f6f8fa;padding:1em;"
        "overflow-x:auto}</style></head><body><h1>1-minute windows from <code>moving_averages</code></h1>"
        f"<img alt='candles, average price and VWAP per symbol' src='data:image/png;base64,{encoded}'>"
        f"<h2>Latest windows</h2><pre>{html.escape(table(rows, per_symbol=5))}</pre></body></html>"
    )
    return png, page
