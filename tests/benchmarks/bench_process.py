"""Retired in favour of ``pipeline bench``, which measures this (and more) side by side with Spark alone; kept as
a thin wrapper so older notes still run:

    eval "$(pipeline stack env)"; python -m tests.benchmarks.bench_process [--trades 200000]

is ``pipeline bench --only processor [--trades 200000]``. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--only", "processor", *sys.argv[1:]]))
