"""Retired in favour of ``pipeline bench``, which measures this side by side with kafka-python's raw produce; kept
as a thin wrapper so older notes still run:

    eval "$(pipeline stack env)"; python -m tests.benchmarks.bench_ingest [--trades 200000]

is ``pipeline bench --only replay [--trades 200000]``. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--only", "replay", *sys.argv[1:]]))
