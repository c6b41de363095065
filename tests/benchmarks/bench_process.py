"""Benchmark: processing throughput (Kafka -> Spark -> MySQL) on a pre-loaded topic, and per-batch time.

    eval "$(pipeline stack env)"; python -m tests.benchmarks.bench_process [--trades 200000]

Loads a fresh topic with ``--trades`` trades (5 symbols, one trade every ~40 ms of event time each), then times
``pipeline process --until-idle`` on it. The job prints its own batch-time percentiles.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

from tests.archive_builder import synthetic_trades, write_archive
from tests.benchmarks.common import fresh_database, timed_pipeline

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=200_000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as database:
        env = dict(os.environ, PIPELINE_TOPIC=f"bench.process.{run}", PIPELINE_CHECKPOINT_DIR=f"{tmp}/checkpoint",
                   **database)
        sources = []
        for i, symbol in enumerate(SYMBOLS):
            trades = synthetic_trades(symbol, 1_735_689_600_000, args.trades // len(SYMBOLS), seed=i, spacing_ms=200)
            sources += ["--source", str(write_archive(Path(tmp), symbol, "2025-01-01", trades))]
        timed_pipeline(["replay", *sources], env)
        total_s, out = timed_pipeline(["process", "--until-idle"], env)
    print(f"pipeline process --until-idle on {args.trades} pre-loaded trades: {total_s:.1f}s wall "
          f"(incl. JVM and Spark start) = {args.trades / total_s:,.0f} trades/s")
    print(out.strip())


if __name__ == "__main__":
    main()
