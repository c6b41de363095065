"""``pipeline produce --mode live`` against a simulated Binance and a real Kafka: where a restart resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from pipeline.adapters import kafka_io
from pipeline.core import messages
from pipeline.core.trades import Trade
from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.cli_helpers import ok as cli
from tests.kafka_helpers import read_all, trades_in
from tests.sim_binance import SimBinance, SimMarket

BTC = SimMarket("BTCUSDT", 8.0, Decimal("97000"), Decimal("0.01"), Decimal("0.00001"), 20000, 3_500_000_000,
                5_100_000_000)


def _produce_for(settings: Settings, base_url: str, start_ms: int, seconds: float, log: Path) -> str:
    """Run the live producer for ``seconds``, stop it with SIGTERM, require exit 0; returns its output."""
    env = env_for(settings, PIPELINE_SYMBOLS="BTCUSDT", PIPELINE_WATERMARK_SECONDS="2")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "produce", "--mode", "live", "--start",
                                 str(start_ms), "--base-url", base_url, "--poll-interval", "0.2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    return text


def test_a_restart_after_a_replay_into_the_live_topic_resumes_at_the_true_highest_id(
        settings_for: Settings, tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - now_ms % 60_000 - 120_000
    with SimBinance([BTC], seed=3, history_start_ms=start_ms - 60_000) as sim:
        _produce_for(settings_for, sim.base_url, start_ms, 6, tmp_path / "first.log")
        # docker compose's own example: a replay into the live topic puts far lower ids at the partition's tail.
        old = synthetic_trades("BTCUSDT", 1_735_689_600_000, 3000, seed=7, first_agg_id=1_000)
        cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "BTCUSDT", "2025-01-01", old)))
        second = _produce_for(settings_for, sim.base_url, start_ms, 6, tmp_path / "second.log")
        served = [t.agg_id for t in sim.served_trades("BTCUSDT") if t.event_time_ms >= start_ms]
    assert "scanning the whole topic" in second
    live = [t.agg_id for t in trades_in(settings_for.kafka_bootstrap or "", settings_for.topic)
            if t.agg_id >= BTC.first_agg_id]
    assert live == sorted(set(live)), "a live trade was published twice"
    # Everything Binance served since the start, once (minus its invalid records), and nothing else.
    valid = {t.agg_id for t in sim.served_trades("BTCUSDT") if t.first_trade_id != -1}
    assert set(live) == {i for i in served if i in valid}


def test_a_foreign_id_above_binances_newest_is_a_clear_error(settings_for: Settings, tmp_path: Path) -> None:
    bootstrap = settings_for.kafka_bootstrap or ""
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    sink.send_trade(Trade("BTCUSDT", 9_000_000_000, Decimal("1"), Decimal("1"), 1, 1, 1_767_268_800_000, False, True))
    sink.flush()
    sink.close()
    now_ms = int(time.time() * 1000)
    with SimBinance([BTC], seed=4, history_start_ms=now_ms - 60_000) as sim:
        sim_url = sim.base_url
        env = env_for(settings_for, PIPELINE_SYMBOLS="BTCUSDT")
        result = subprocess.run([sys.executable, "-m", "pipeline", "produce", "--mode", "live", "--base-url",
                                 sim_url], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "9000000000" in last and "above Binance's newest" in last and "fresh" in last
    assert len(trades_in(bootstrap, settings_for.topic)) == 1  # nothing was published


def test_a_quiet_symbol_behind_a_busy_one_in_its_partition_is_still_found(settings_for: Settings) -> None:
    bootstrap = settings_for.kafka_bootstrap or ""
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    quiet, busy = "ADAUSDT", "BTCUSDT"  # both hash to the same one of 3 partitions (with ETHUSDT)
    assert kafka_io.home_partition(quiet, 3) == kafka_io.home_partition(busy, 3)
    t0 = 1_767_268_800_000
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    sink.send_trade(Trade(quiet, 77, Decimal("1"), Decimal("1"), 1, 1, t0, False, True))
    sink.send_heartbeat(messages.Heartbeat(quiet, t0 - 60_000, t0 + 5_000))
    for i in range(6_000):  # the busy symbol fills the partition's tail after it
        sink.send_trade(Trade(busy, 1_000 + i, Decimal("1"), Decimal("1"), i, i, t0 + i, False, True))
    sink.send_heartbeat(messages.Heartbeat(busy, t0, t0 + 6_000))
    sink.flush()
    sink.close()
    points = kafka_io.resume_points(bootstrap, settings_for.topic, [quiet, busy, "SOLUSDT"])
    assert points == {quiet: messages.ResumePoint(77, t0, t0 + 5_000), busy: messages.ResumePoint(6_999, t0 + 5_999,
                                                                                                   t0 + 6_000)}
    partitions = {k: p for p, _, k, _ in read_all(bootstrap, settings_for.topic)}
    assert partitions == {s.encode(): kafka_io.home_partition(s, 3) for s in (quiet, busy)}  # as the producer put them


def test_a_hole_left_by_a_failed_send_is_where_a_restart_resumes(settings_for: Settings) -> None:
    """Trades 1,000-1,199 acknowledged, a heartbeat, then 1,200-1,299 lost (their record batch expired) while
    1,300-1,399 were written: a restart must fetch 1,200 again, not resume after 1,399 and let its next heartbeat
    declare the hole complete."""
    bootstrap = settings_for.kafka_bootstrap or ""
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    t0 = 1_767_268_800_000
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)

    def send(first: int, last: int) -> None:
        for i in range(first, last + 1):
            sink.send_trade(Trade("BTCUSDT", i, Decimal("1"), Decimal("1"), i, i, t0 + (i - 1_000) * 100, False, True))

    send(1_000, 1_199)
    sink.send_heartbeat(messages.Heartbeat("BTCUSDT", t0, t0 + 15_000))  # ids up to 1,149 are before it
    send(1_300, 1_399)
    # and one foreign copy of an old trade, far below: not a hole
    sink.send_trade(Trade("BTCUSDT", 5, Decimal("1"), Decimal("1"), 5, 5, t0 - 3_600_000, False, True))
    sink.flush()
    sink.close()
    points = kafka_io.resume_points(bootstrap, settings_for.topic, ["BTCUSDT"])
    assert points == {"BTCUSDT": messages.ResumePoint(1_199, t0 + 19_900, t0 + 15_000)}


def test_after_partitions_are_added_a_moved_symbol_resumes_from_its_coverage_in_its_former_home(
        settings_for: Settings) -> None:
    """ETHUSDT lived in partition 2 of 3 and lives in 5 of 6. Its newest heartbeat is deep in partition 2, behind a
    busy BTCUSDT, and its newest trades are at the tail: the scan must still find the heartbeat (or the new coverage
    would start later, leaving a gap no heartbeat fills), and the trades after it must be sent again to partition 5
    (resume from the last one before its T)."""
    from kafka.admin import KafkaAdminClient, NewPartitions

    bootstrap = settings_for.kafka_bootstrap or ""
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    t0 = 1_767_268_800_000
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    for i in range(100):
        sink.send_trade(Trade("ETHUSDT", 500 + i, Decimal("1"), Decimal("1"), i, i, t0 + i * 100, False, True))
    sink.send_heartbeat(messages.Heartbeat("ETHUSDT", t0, t0 + 5_000))  # ids 500..549 are before its T
    for i in range(3_000):  # the busy symbol of the same partition
        sink.send_trade(Trade("BTCUSDT", 9_000 + i, Decimal("1"), Decimal("1"), i, i, t0 + i, False, True))
    sink.send_heartbeat(messages.Heartbeat("BTCUSDT", t0, t0 + 3_000))
    for i in range(100, 120):  # ETHUSDT again, at the partition's tail
        sink.send_trade(Trade("ETHUSDT", 500 + i, Decimal("1"), Decimal("1"), i, i, t0 + i * 100, False, True))
    sink.flush()
    sink.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_partitions({settings_for.topic: NewPartitions(total_count=6)})
    admin.close()
    points = kafka_io.resume_points(bootstrap, settings_for.topic, ["ETHUSDT", "BTCUSDT"])
    assert points["ETHUSDT"] == messages.ResumePoint(549, t0 + 4_900, t0 + 5_000)
    assert points["BTCUSDT"] == messages.ResumePoint(11_999, t0 + 2_999, t0 + 3_000)
