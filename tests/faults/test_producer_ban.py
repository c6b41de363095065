"""``pipeline produce --mode live`` SIGKILLed while it waits out a ban, against the simulated Binance
(tests/sim_binance.py), with ``pipeline process`` running: first a 418 (banned) with Retry-After, then a 429 with
Retry-After. Each time the producer is killed during its wait and started again at once, so the new process, which
knows nothing of the wait, meets the exchange still blocking it: after the 418 it is answered 418 until the ban
ends; after the 429 its first request is one too many and Binance bans it (418), as the real exchange does. It must
wait that out too, resume from Kafka, and nothing may be lost, doubled or late: every minute equals the reference
over the trades the server served, every trade is in Kafka once and merged once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings
from tests.cli_helpers import env_for
from tests.faults.scenario import Processes, all_final, ledger, tail, verdict, wait_until
from tests.sim_binance import MARKETS as SKEWED
from tests.sim_binance import SimBinance

MARKETS = [SKEWED[s] for s in ("BTCUSDT", "ETHUSDT", "ADAUSDT")]
BACKLOG_MINUTES = 3
LAG_SECONDS = 3  # PIPELINE_WATERMARK_SECONDS
BANS = [("418", 10.0), ("429", 8.0)]  # (status, Retry-After seconds)


def _pages(sim: SimBinance) -> int:
    """Pages of trades served (not the requests that locate the first agg id)."""
    return sum(1 for path, params, status in list(sim.requests_log) if path.endswith("aggTrades")
               and "fromId" in params and params.get("limit") == "1000" and status == 200)


def test_producer_sigkilled_while_waiting_out_a_ban(fault_settings: Settings, tmp_path: Path,
                                                   fault_summary: list[dict[str, Any]]) -> None:
    url = fault_settings.mysql_url
    assert url is not None and fault_settings.checkpoint_dir is not None
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - now_ms % 60_000 - BACKLOG_MINUTES * 60_000
    sim = SimBinance(MARKETS, seed=10, history_start_ms=start_ms - 120_000, latency_s=0.02)
    base_url = sim.start()
    env = env_for(fault_settings, PIPELINE_SYMBOLS=",".join(m.symbol for m in MARKETS),
                  PIPELINE_WATERMARK_SECONDS=str(LAG_SECONDS))
    produce = ["produce", "--mode", "live", "--start", str(start_ms), "--base-url", base_url,
               "--poll-interval", "0.5", "--request-timeout", "2"]
    run = Processes(tmp_path)
    notes = []
    try:
        run.start("process", ["process", "--trigger-seconds", "0.5"], env)
        wait_until((fault_settings.checkpoint_dir / "stream" / "metadata").exists, 240, "the query started",
                   lambda: run.check_alive("process"))
        run.start("produce", produce, env)
        wait_until(lambda: _pages(sim) >= 3 and ledger(url)["merged"] > 0, 120, "trades published and processed",
                   lambda: run.check_alive("produce", "process"))
        for status, retry_after in BANS:
            served = sim.faults_served[status]
            sim.inject(status, 1, retry_after_s=retry_after)
            wait_until(lambda: sim.faults_served[status] > served, 60, f"the injected {status} served",  # noqa: B023
                       lambda: run.check_alive("produce", "process"), 0.05)
            asked = len(sim.requests_log)
            time.sleep(2.0)  # it is waiting out Retry-After now
            assert len(sim.requests_log) == asked, f"the producer sent requests during a {status}'s Retry-After"
            run.running["produce"].kill()
            run.running["produce"].wait(timeout=30)
            banned, pages = sim.faults_served["ban_418"], _pages(sim)
            run.start("produce", produce, env)  # at once: the exchange still blocks this IP
            waited = wait_until(lambda: _pages(sim) > pages, 120, "the restarted producer gets pages again",  # noqa: B023
                                lambda: run.check_alive("produce", "process"), 0.1)
            notes.append(f"{status} Retry-After {retry_after:.0f} s: killed 2 s into the wait, restarted, "
                         f"{sim.faults_served['ban_418'] - banned} banned answers, paging again {waited:.0f} s later")
        freeze_ms = int(time.time() * 1000) + 500
        sim.freeze(freeze_ms)  # the market goes quiet: every minute up to the freeze can close
        served_trades = [t for t in sim.all_trades() if t.event_time_ms >= start_ms]
        wait_until(lambda: all_final(url, [t for t in sim.all_trades() if t.event_time_ms >= start_ms])(), 180,
                   "every served minute final", lambda: run.check_alive("produce", "process"), 1.0)
        assert run.stop("produce", 60) == 0, tail(run.log("produce"))
        assert run.stop("process") == 0, tail(run.log("process"))
    finally:
        run.kill_all()
        sim.stop()
    served_trades = [t for t in sim.all_trades() if t.event_time_ms >= start_ms]
    assert max(t.event_time_ms for t in served_trades) < freeze_ms
    produced = run.log("produce").read_text()
    assert produced.count("resuming after agg id") >= len(BANS), produced[-3000:]  # each restart resumed from Kafka
    verdict("producer SIGKILL during a ban", url, served_trades, faults=len(BANS), started=started,
            detail="; ".join(notes), summary=fault_summary, bootstrap=fault_settings.kafka_bootstrap,
            topic=fault_settings.topic)
