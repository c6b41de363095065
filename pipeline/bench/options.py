"""What a bench run measures and how much: the parts, their sizes (full and ``--quick``) and the options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.settings import DEFAULT_TRIGGER_SECONDS

PARTS = ("processor", "replay", "outage", "freshness", "ledger")
LIVE_TRIGGER_S = DEFAULT_TRIGGER_SECONDS  # the live runs use `pipeline process` as it comes; the floor query too


@dataclasses.dataclass(frozen=True)
class Sizes:
    trades: int
    live_seconds: float
    ledger_seconds: float
    rate: int = 500
    ledger_rows: int = 43_200  # a month of batches, one a minute
    # long outages caught up by `pipeline process --until-idle`: (symbols, minutes) of live-mode traffic each
    outages: tuple[tuple[int, int], ...] = ((5, 120), (5, 1440), (20, 1440))
    freshness_runs: int = 3  # the live run is repeated; the table shows the worst
    floor_seconds: float = 30  # Spark's floor: a query that only counts, fed at the same pace


FULL = Sizes(trades=1_000_000, live_seconds=120, ledger_seconds=45)
QUICK = Sizes(trades=20_000, live_seconds=10, ledger_seconds=6, outages=((5, 120),), freshness_runs=1,
              floor_seconds=6)


@dataclasses.dataclass
class Options:
    sizes: Sizes
    quick: bool
    parts: tuple[str, ...] = PARTS
    out: Path | None = None
    partitions: int | None = None
