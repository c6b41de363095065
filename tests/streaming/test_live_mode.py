"""Live mode end to end, the way production meets it: ``pipeline process`` already running, ``pipeline produce
--mode live`` catching up a backlog of skewed symbols from a simulated Binance on 127.0.0.1, killed mid-way, down
for longer than the lag margin, restarted into exchange faults, stopped with SIGTERM. Every minute must equal the
reference aggregator over the trades the server served, be final, and no trade may be late."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.adapters.mysql import connection, reads
from pipeline.settings import MysqlUrl, Settings
from tests.cli_helpers import env_for
from tests.reference_rows import assert_rows_match, expected_rows
from tests.sim_binance import MARKETS as SKEWED
from tests.sim_binance import SimBinance

MARKETS = list(SKEWED.values())  # all four: BTCUSDT about 60x ADAUSDT
BACKLOG_MINUTES = 11
LAG_SECONDS = 3  # PIPELINE_WATERMARK_SECONDS: the producer's margin for trades reaching REST late
FAULTS = [("5xx", 3), ("429", 1), ("html200", 1), ("slow", 1), ("truncated", 1), ("wrong_shape", 1),
          ("reset", 1), ("418", 1)]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def _pages(sim: SimBinance, symbol: str) -> int:
    """Pages of trades served (not the requests that locate the first agg id)."""
    return sum(1 for path, params, status in list(sim.requests_log) if path.endswith("aggTrades")
               and params.get("symbol") == symbol and "fromId" in params and params.get("limit") == "1000"
               and status == 200)


def _state(url: MysqlUrl) -> dict[tuple[str, datetime], int]:
    try:
        return {(r.symbol, r.start_time): r.is_final for r in reads.read_windows(url)}
    except Exception:  # noqa: BLE001 - the job creates the schema when it starts
        return {}


def test_live_catch_up_kill_outage_faults_and_sigterm_lose_nothing(settings_for: Settings, tmp_path: Path) -> None:
    url = settings_for.mysql_url
    assert url is not None
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - now_ms % 60_000 - BACKLOG_MINUTES * 60_000  # --start: a backlog of 11+ minutes
    sim = SimBinance(MARKETS, seed=9, history_start_ms=start_ms - 120_000, latency_s=0.05)
    base_url = sim.start()
    env = env_for(settings_for, PIPELINE_SYMBOLS=",".join(m.symbol for m in MARKETS),
                  PIPELINE_WATERMARK_SECONDS=str(LAG_SECONDS))
    produce = ["produce", "--mode", "live", "--start", str(start_ms + 17_000),  # mid-minute: rounded down
               "--base-url", base_url,
               "--poll-interval", "0.5", "--request-timeout", "1"]
    logs = {name: tmp_path / f"{name}.log" for name in ("process", "produce")}
    processor = _spawn(["process", "--trigger-seconds", "0.5"], env, logs["process"])
    producer = None
    try:
        deadline = time.monotonic() + 180
        assert settings_for.checkpoint_dir is not None
        while not (settings_for.checkpoint_dir / "stream" / "metadata").exists():  # the query has started
            assert processor.poll() is None and time.monotonic() < deadline, logs["process"].read_text()[-3000:]
            time.sleep(0.5)
        producer = _spawn(produce, env, logs["produce"])
        # Kill it mid catch-up: BTCUSDT needs ~17 pages of 1000; the quiet symbols are caught up after one.
        while _pages(sim, "BTCUSDT") < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=30)
        assert _pages(sim, "BTCUSDT") < BACKLOG_MINUTES * 60 * 25 / 1000, "the kill should land mid catch-up"
        time.sleep(3 * LAG_SECONDS)  # down for longer than the lag margin: a new backlog forms

        for kind, count in FAULTS:
            sim.inject(kind, count, retry_after_s=2.0, delay_s=2.0)
        producer = _spawn(produce, env, logs["produce"])
        while sum(sim.faults_served[k] for k, _ in FAULTS) < sum(c for _, c in FAULTS) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        freeze_ms = int(time.time() * 1000) + 500
        sim.freeze(freeze_ms)  # the market goes quiet: every minute up to the freeze can close
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            # What the server made visible so far (it generates trades as its clock passes them).
            served = [t for t in sim.all_trades() if t.event_time_ms >= start_ms]
            expected = expected_rows(served)
            state = _state(url)
            if set(expected) <= set(state) and all(state[k] for k in expected):
                break
            assert producer.poll() is None, logs["produce"].read_text()[-3000:]
            time.sleep(1)
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(timeout=60) == 0, logs["produce"].read_text()[-3000:]
        processor.send_signal(signal.SIGTERM)
        assert processor.wait(timeout=120) == 0, logs["process"].read_text()[-3000:]
        # The exchange's own per-minute figures (its 1m klines) agree with every window the pipeline finalized.
        until_ms = freeze_ms - freeze_ms % 60_000
        for market in MARKETS:
            check = subprocess.run(
                [sys.executable, "-m", "pipeline", "reconcile", "--symbol", market.symbol, "--since",
                 datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M"), "--until",
                 datetime.fromtimestamp(until_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M"), "--base-url", base_url],
                env=env, capture_output=True, text=True, timeout=120)
            assert check.returncode == 0 and "OK: every final minute matches" in check.stdout, \
                check.stdout + check.stderr
    finally:
        for proc in (processor, producer):
            if proc is not None and proc.poll() is None:
                proc.kill()
        sim.stop()

    served = [t for t in sim.all_trades() if t.event_time_ms >= start_ms]
    assert max(t.event_time_ms for t in served) < freeze_ms and len({t.symbol for t in served}) == len(MARKETS)
    expected = expected_rows(served)
    assert_rows_match(url, served)  # every minute exact and final
    with connection.transaction(url) as cur:
        cur.execute("SELECT COALESCE(SUM(late_trades), 0), COALESCE(SUM(trades_merged), 0) FROM pipeline_batches")
        late, merged = cur.fetchone()
        cur.execute("SELECT COUNT(*) FROM quarantine")
        quarantined = cur.fetchone()[0]
    valid = sum(row["agg_trade_count"] for row in expected.values())
    assert (late, merged, quarantined) == (0, valid, 0)
    assert "0 late trades" in logs["process"].read_text()
    produced = logs["produce"].read_text()
    assert "BTCUSDT: resuming after agg id" in produced, produced
    # Every fault was seen, counted and retried: the answers that are no page by the poller (429, 418, HTML,
    # truncated, wrong shape), 5xx, resets and timeouts first by the HTTP session.
    summary = [line for line in produced.splitlines() if line.startswith("produce: published")][-1]
    errors = int(summary.split("exchange errors ")[1].split(",")[0])
    retried = int(summary.split(", ")[-1].split(" failed attempts")[0])
    assert errors >= 5 and retried >= 5, summary
    print(f"live mode: {len(expected)} windows exact and final, {valid} aggTrades, {late} late, "
          f"{dict(sim.faults_served)} faults served")

