"""`pipeline backfill` against real Kafka, Spark and MySQL: history older than what a running stream holds lands
exact and final beside it, through a private topic; a second backfill changes nothing; a bad source writes
nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kafka.admin import KafkaAdminClient

from pipeline.adapters.mysql import reads
from pipeline.core import times
from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for, run
from tests.integration.test_ingestion import CASSETTE, cassette_trades
from tests.kafka_helpers import read_all
from tests.reference_rows import assert_rows_match, expected_rows

JAN_1_2025 = 1_735_689_600_000


def _topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_backfill_beside_a_running_stream_is_exact_repeatable_and_refuses_bad_sources(
        settings_for: Settings, tmp_path: Path) -> None:
    url = settings_for.mysql_url
    bootstrap = settings_for.kafka_bootstrap or ""
    assert url is not None and settings_for.checkpoint_dir is not None
    env = env_for(settings_for)
    stream = cassette_trades(CASSETTE)
    # History the stream never saw: SOLUSDT (a symbol the stream also has) and XRPETH, a year earlier.
    sol = synthetic_trades("SOLUSDT", JAN_1_2025, 2_000, seed=31, first_agg_id=10, spacing_ms=4_000)
    xrp = synthetic_trades("XRPETH", JAN_1_2025, 800, seed=32, spacing_ms=9_000)
    # Whole days, as Binance publishes them (a zip and its CHECKSUM): they vouch for their day, so every minute closes.
    sources = [write_archive(tmp_path, "SOLUSDT", "2025-01-01", sol, zipped=True, checksum=True),
               write_archive(tmp_path, "XRPETH", "2025-01-01", xrp, zipped=True, checksum=True)]
    backfill = ["backfill", *[a for s in sources for a in ("--source", str(s))]]

    processor = subprocess.Popen([sys.executable, "-m", "pipeline", "process", "--trigger-seconds", "0.5"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = settings_for.checkpoint_dir / "stream" / "metadata"
        deadline = time.monotonic() + 300
        while not started.exists():
            assert processor.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        feed = subprocess.Popen([sys.executable, "-m", "pipeline", "replay", "--source", str(CASSETTE), "--speed",
                                 "30x"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = run(backfill, env, timeout=900)  # while the stream is being fed
        assert first.returncode == 0, first.stderr[-3000:]
        assert feed.wait(timeout=300) == 0
        want = len(expected_rows(stream + sol + xrp))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sum(r.is_final for r in reads.read_windows(url)) < want:
            time.sleep(1)
        assert_rows_match(url, stream + sol + xrp)  # every window of both exact and final
        assert "0 late trades" in first.stdout, first.stdout

        # Nothing of the backfill went through the stream's topic, and its private topic is gone.
        assert {v for _, _, _, v in read_all(bootstrap, settings_for.topic) if b"XRPETH" in v} == set()
        assert not [t for t in _topics(bootstrap) if t.startswith(f"{settings_for.topic}.backfill.")]

        before = reads.read_windows(url)
        again = run(backfill, env, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "0 window rows written" in again.stdout and "0 trades counted" in again.stdout, again.stdout
        assert reads.read_windows(url) == before  # not a value, not even updated_at
    finally:
        processor.send_signal(signal.SIGTERM)
        processor.wait(timeout=120)

    bad = tmp_path / "bad"
    bad.mkdir()
    broken = write_archive(bad, "ADAUSDT", "2025-01-02", synthetic_trades("ADAUSDT", JAN_1_2025 + 86_400_000, 50,
                                                                            seed=33))
    broken.write_text(broken.read_text().replace(",", ";", 1))
    topics = _topics(bootstrap)
    refused = run(["backfill", "--source", str(sources[0]), "--source", str(broken)], env, timeout=300)
    assert refused.returncode == 4 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert _topics(bootstrap) == topics and reads.read_windows(url) == before


def test_backfill_by_time_from_the_exchange_is_exact_and_agrees_with_its_klines(settings_for: Settings) -> None:
    """`--symbol --from --until`: aggTrades fetched from a simulated Binance by time, page by page; the windows
    equal the reference aggregator's over exactly the trades in the range, final, and reconcile finds every one
    equal to the exchange's klines."""
    from datetime import UTC, datetime

    from pipeline.core.trades import invalid_reason
    from tests.sim_binance import MARKETS, SimBinance

    url = settings_for.mysql_url
    assert url is not None
    now_ms = int(time.time() * 1000)
    until_ms = now_ms - now_ms % 60_000 - 60_000
    from_ms = until_ms - 8 * 60_000 + 30_000  # mid-minute: the first minute holds only the trades from there on
    symbols = ("SOLUSDT", "ADAUSDT")
    sim = SimBinance([MARKETS[s] for s in symbols], seed=41, history_start_ms=from_ms - 300_000)
    base_url = sim.start()

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    try:
        env = env_for(settings_for)
        done = run(["backfill", *[a for s in symbols for a in ("--symbol", s)], "--from", iso(from_ms), "--until",
                    iso(until_ms), "--base-url", base_url], env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        trades = [t for s in symbols for t in sim.served_trades(s)
                  if invalid_reason(t) is None and from_ms <= t.event_time_ms < until_ms]
        assert len({t.symbol for t in trades}) == 2
        assert_rows_match(url, trades, all_final=False)  # exact, every column
        first_minute = from_ms - from_ms % 60_000  # half of it lies before --from: it cannot be known complete
        open_minutes = {(r.symbol, r.start_time) for r in reads.read_windows(url) if not r.is_final}
        assert open_minutes == {(s, times.utc(first_minute)) for s in symbols}, open_minutes
        for symbol in symbols:
            check = run(["reconcile", "--symbol", symbol, "--since", iso(from_ms + 30_000), "--until",
                         iso(until_ms), "--base-url", base_url], env, timeout=120)
            assert check.returncode == 0 and "OK: every final minute matches" in check.stdout, check.stdout
    finally:
        sim.stop()
