"""Benchmark: replay throughput into Kafka vs kafka-python's raw produce rate on the same broker.

    eval "$(pipeline stack env)"; python -m tests.benchmarks.bench_ingest [--trades 200000]

Not part of the test suites (timings are not assertions); the numbers go in docs/PERFORMANCE.md with this command.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaProducer

from pipeline.adapters.kafka_io import ensure_topic
from pipeline.core import messages
from tests.archive_builder import synthetic_trades, write_archive
from tests.benchmarks.common import timed_pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=200_000)
    args = parser.parse_args()
    bootstrap = os.environ["PIPELINE_KAFKA_BOOTSTRAP"]
    trades = synthetic_trades("BTCUSDT", 1_735_689_600_000, args.trades, seed=7, spacing_ms=200)
    encoded = [messages.encode_trade(t) for t in trades]

    # 1. Raw kafka-python: pre-encoded messages, the producer settings TradeSink uses, one flush at the end.
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             compression_type="gzip", linger_ms=20, batch_size=256 * 1024)
    started = time.perf_counter()
    for key, value in encoded:
        producer.send(topic, key=key, value=value)
    producer.flush()
    raw_s = time.perf_counter() - started
    producer.close()
    print(f"raw kafka-python send+flush: {len(encoded)} messages in {raw_s:.2f}s = {len(encoded) / raw_s:,.0f} msg/s")

    # 2. The pipeline: parse the archive, validate, dedupe, encode, publish with confirmation, as a user runs it.
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_archive(Path(tmp), "BTCUSDT", "2025-01-01", trades)
        env = dict(os.environ, PIPELINE_TOPIC=f"bench.replay.{uuid.uuid4().hex[:8]}")
        total_s, out = timed_pipeline(["replay", "--source", str(archive)], env)
    print(f"pipeline replay (whole command, incl. validation pass and start-up): {total_s:.2f}s "
          f"= {len(trades) / total_s:,.0f} trades/s")
    print(out.strip())


if __name__ == "__main__":
    main()
