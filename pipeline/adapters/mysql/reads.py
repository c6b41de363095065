"""Reads: the rows and figures that status, reconcile, the demo and the bench show. Typed rows, not dicts."""

from __future__ import annotations

from typing import Any

from pipeline.adapters.mysql.connection import transaction
from pipeline.adapters.mysql.state import WINDOW_COLUMNS
from pipeline.settings import MysqlUrl


def read_windows(url: MysqlUrl, symbol: str | None = None) -> list[dict[str, Any]]:
    with transaction(url) as cur:
        where, params = ("WHERE symbol = %s", (symbol,)) if symbol else ("", ())
        cur.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM moving_averages {where} ORDER BY symbol, start_time",
                    params)
        return [dict(zip(WINDOW_COLUMNS, row, strict=True)) for row in cur.fetchall()]

