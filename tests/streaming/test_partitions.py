"""Partitions added to the topic while a live producer runs and the job is behind.

ETHUSDT's home is partition 2 of 3 and partition 5 of 6. A heartbeat is sound because it follows the trades it
covers in their partition; if a producer that restarted after the change sent its heartbeats to partition 5 while
trades they cover still sat unread in partition 2, a job reading partition 5 first would close ETHUSDT's minutes
early and count the rest late. Every minute must equal the reference aggregator over what the exchange served,
be final, and no trade may be late."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewPartitions

from pipeline.adapters import kafka_io
from pipeline.adapters.mysql import connection, reads
from pipeline.settings import Settings
from tests.cli_helpers import env_for
from tests.kafka_helpers import read_all
from tests.reference_rows import assert_rows_match, expected_rows
from tests.sim_binance import MARKETS, SimBinance

SYMBOLS = ("BTCUSDT", "ETHUSDT")  # both in partition 2 of 3; ETHUSDT moves to 5 of 6, BTCUSDT stays


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def _published(bootstrap: str, topic: str) -> dict[int, set[bytes]]:
    """The keys found in each partition."""
    out: dict[int, set[bytes]] = {}
    for partition, _, key, _ in read_all(bootstrap, topic):
        out.setdefault(partition, set()).add(key or b"")
    return out


def test_partitions_added_under_a_running_producer_and_a_lagging_job_finalize_nothing_early(
        settings_for: Settings, tmp_path: Path) -> None:
    assert [kafka_io.home_partition(s, 3) for s in SYMBOLS] == [2, 2]
    assert [kafka_io.home_partition(s, 6) for s in SYMBOLS] == [2, 5]
    url, bootstrap = settings_for.mysql_url, settings_for.kafka_bootstrap or ""
    assert url is not None and settings_for.checkpoint_dir is not None
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - now_ms % 60_000 - 2 * 60_000  # a backlog of 2+ minutes: about 4,000 trades
    sim = SimBinance([MARKETS[s] for s in SYMBOLS], seed=21, history_start_ms=start_ms - 60_000)
    base_url = sim.start()
    env = env_for(settings_for, PIPELINE_SYMBOLS=",".join(SYMBOLS), PIPELINE_WATERMARK_SECONDS="2")
    produce = ["produce", "--mode", "live", "--start", str(start_ms), "--base-url", base_url, "--poll-interval", "0.3"]
    logs = {name: tmp_path / f"{name}.log" for name in ("process", "produce")}
    # Behind by design: 200 messages a batch, so the backlog of partition 2 takes many batches.
    processor = _spawn(["process", "--trigger-seconds", "0.25", "--max-offsets-per-trigger", "200"], env,
                       logs["process"])
    producer = _spawn(produce, env, logs["produce"])
    try:
        deadline = time.monotonic() + 120
        while not {b"ETHUSDT", b"BTCUSDT"} <= _published(bootstrap, settings_for.topic).get(2, set()):
            assert producer.poll() is None and time.monotonic() < deadline, logs["produce"].read_text()[-3000:]
            time.sleep(0.2)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_partitions({settings_for.topic: NewPartitions(total_count=6)})
        admin.close()
        time.sleep(1)
        producer.send_signal(signal.SIGKILL)  # mid catch-up: trades after its last heartbeat sit in partition 2
        producer.wait(timeout=30)
        producer = _spawn(produce, env, logs["produce"])  # a restart after the change
        time.sleep(8)
        freeze_ms = int(time.time() * 1000) + 500
        sim.freeze(freeze_ms)
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            expected = expected_rows(t for t in sim.all_trades() if t.event_time_ms >= start_ms)
            state = {(r.symbol, r.start_time): r.is_final for r in reads.read_windows(url)} \
                if (settings_for.checkpoint_dir / "stream" / "metadata").exists() else {}
            if set(expected) <= set(state) and all(state[k] for k in expected):
                break
            assert producer.poll() is None, logs["produce"].read_text()[-3000:]
            time.sleep(1)
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(timeout=60) == 0, logs["produce"].read_text()[-3000:]
        processor.send_signal(signal.SIGTERM)
        assert processor.wait(timeout=120) == 0, logs["process"].read_text()[-3000:]
    finally:
        for proc in (processor, producer):
            if proc.poll() is None:
                proc.kill()
        sim.stop()
        for log in logs.values():  # kept for a failure's diagnosis
            (Path("/tmp") / f"test_partitions.{log.name}").write_bytes(log.read_bytes())

    assert b"ETHUSDT" in _published(bootstrap, settings_for.topic).get(5, set()), "the change should move ETHUSDT"
    assert "outside its home partition" in logs["produce"].read_text()  # the restart sent those trades again
    served = [t for t in sim.all_trades() if t.event_time_ms >= start_ms]
    with connection.transaction(url) as cur:
        cur.execute("SELECT symbol, first_ms, last_ms FROM pipeline_coverage ORDER BY symbol, first_ms")
        ranges = cur.fetchall()
    still_open = [(r.symbol, str(r.start_time)) for r in reads.read_windows(url) if not r.is_final]
    assert not still_open, f"open: {still_open}; coverage {ranges}; freeze {freeze_ms}; start {start_ms}"
    assert_rows_match(url, served)  # every minute exact and final
    with connection.transaction(url) as cur:
        cur.execute("SELECT COALESCE(SUM(late_trades), 0) FROM pipeline_batches")
        late = cur.fetchone()[0]
        cur.execute("SELECT COUNT(*) FROM quarantine")
        quarantined = cur.fetchone()[0]
    assert (late, quarantined) == (0, 0)
