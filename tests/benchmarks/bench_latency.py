"""Benchmark: per-batch time of the running job (``pipeline process``, 1 s trigger) under a live-like stream.

    eval "$(pipeline stack env)"; python -m tests.benchmarks.bench_latency [--speed 60x]

Starts the job on a fresh topic, replays the bundled cassette at ``--speed`` (60x: about 520 trades/s), stops the
job with SIGTERM and prints its summary, whose batch-time percentiles cover batches that had input.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.benchmarks.common import fresh_database

CASSETTE = Path(__file__).resolve().parents[2] / "fixtures" / "cassettes" / "binance-5-symbols-20min.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", default="60x")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as database:
        env = dict(os.environ, PIPELINE_TOPIC=f"bench.latency.{uuid.uuid4().hex[:8]}",
                   PIPELINE_CHECKPOINT_DIR=f"{tmp}/checkpoint",
                   **database)
        job = subprocess.Popen([sys.executable, "-m", "pipeline", "process"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        time.sleep(20)  # JVM and Spark start
        started = time.perf_counter()
        replay = subprocess.run([sys.executable, "-m", "pipeline", "replay", "--source", str(CASSETTE), "--speed",
                                 args.speed], env=env, capture_output=True, text=True, check=True)
        print(f"replay at {args.speed} took {time.perf_counter() - started:.1f}s: {replay.stdout.strip()}")
        time.sleep(5)
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=120)
    print(out.strip())


if __name__ == "__main__":
    main()
