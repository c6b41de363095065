"""The services fail under a running pipeline: ``pipeline replay --speed 20x`` feeds the bundled cassette into a
running ``pipeline process`` while the Kafka broker is SIGKILLed and restarted, MySQL is SIGKILLed and restarted,
or MySQL is frozen (SIGSTOP) for longer than the client's read/write timeouts.

The behaviour required (and observed): the processor and the replay both ride the outage out, without exiting, and
converge to exactly the reference rows, every window final, every trade merged once. A job that exits on a
broker restart or a MySQL outage of seconds would need a supervisor to restart it for every blip; the product
retries instead (Kafka clients reconnect by themselves; MySQL failures that say nothing about the data are retried
by the writer, a lost commit answer is found by the batch ledger).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.adapters.mysql import connection
from pipeline.settings import Settings
from tests.cli_helpers import env_for
from tests.faults.conftest import FaultStack
from tests.faults.scenario import Processes, all_final, ledger, verdict, wait_until
from tests.integration.test_ingestion import CASSETTE, cassette_trades

SPEED = "20x"  # the 21 recorded minutes in about 60 s
MYSQL_DOWN_S = 15.0
KAFKA_DOWN_S = 10.0
FREEZE_S = connection.IO_TIMEOUT_SECONDS + 10  # longer than the client's read/write timeouts


def _run(name: str, settings: Settings, stack: FaultStack, tmp_path: Path, summary: list[dict[str, Any]],
         inject: Callable[[Processes], str]) -> None:
    """Processor and replay running; after the processor applied a few batches, ``inject`` the fault (it returns
    what it did); then both must finish by themselves (the replay) or on SIGTERM (the processor), exactly."""
    url = settings.mysql_url
    assert url is not None
    started = time.monotonic()
    trades = cassette_trades(CASSETTE)
    env = env_for(settings)
    run = Processes(tmp_path)
    try:
        run.start("process", ["process", "--trigger-seconds", "0.5"], env)
        assert settings.checkpoint_dir is not None
        wait_until((settings.checkpoint_dir / "stream" / "metadata").exists, 240, "the query started",
                   lambda: run.check_alive("process"))
        run.start("replay", ["replay", "--source", str(CASSETTE), "--speed", SPEED], env)
        wait_until(lambda: ledger(url)["batches_with_trades"] >= 2, 120, "two batches applied",
                   lambda: run.check_alive("process"))
        assert run.running["replay"].poll() is None, "the fault should land while the replay still feeds"
        at = ledger(url)
        detail = inject(run) + f", after {at['batches_with_trades']} batches, {at['merged']} trades merged"
        assert run.wait("replay", 300, watching=["process"]) == 0, run.log("replay").read_text()[-3000:]
        wait_until(all_final(url, trades), 300, "every window final", lambda: run.check_alive("process"), 1.0)
        assert run.stop("process") == 0, run.log("process").read_text()[-3000:]
    finally:
        run.kill_all()
    verdict(name, url, trades, faults=1, started=started, detail=detail, summary=summary,
            bootstrap=settings.kafka_bootstrap, topic=settings.topic)


def _hold(seconds: float, run: Processes, *names: str) -> None:
    """Let the outage last, failing at once if a process gives up meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run.check_alive(*names)
        time.sleep(0.2)


def test_kafka_broker_killed_and_restarted_mid_stream(fault_settings: Settings, fault_stack: FaultStack,
                                                      tmp_path: Path, fault_summary: list[dict[str, Any]]) -> None:
    def inject(run: Processes) -> str:
        fault_stack.kafka.kill()
        _hold(KAFKA_DOWN_S, run, "process", "replay")
        took = fault_stack.kafka.restart()
        return f"broker SIGKILLed, down {KAFKA_DOWN_S:.0f} s, back on the same port and data dir {took:.0f} s later"

    _run("Kafka broker SIGKILL + restart", fault_settings, fault_stack, tmp_path, fault_summary, inject)


def test_mysql_killed_and_restarted_mid_stream(fault_settings: Settings, fault_stack: FaultStack, tmp_path: Path,
                                               fault_summary: list[dict[str, Any]]) -> None:
    def inject(run: Processes) -> str:
        fault_stack.mysql.kill()
        _hold(MYSQL_DOWN_S, run, "process")
        took = fault_stack.mysql.restart()
        return f"mysqld SIGKILLed, down {MYSQL_DOWN_S:.0f} s, crash recovery and back in {took:.0f} s"

    _run("MySQL SIGKILL + restart", fault_settings, fault_stack, tmp_path, fault_summary, inject)


def test_mysql_frozen_longer_than_the_client_timeouts(fault_settings: Settings, fault_stack: FaultStack,
                                                      tmp_path: Path, fault_summary: list[dict[str, Any]]) -> None:
    def inject(run: Processes) -> str:
        fault_stack.mysql.freeze()
        try:
            _hold(FREEZE_S, run, "process")
        finally:
            fault_stack.mysql.thaw()
        return f"mysqld SIGSTOPped {FREEZE_S:.0f} s (client timeouts {connection.IO_TIMEOUT_SECONDS} s), SIGCONT"

    _run("MySQL frozen (SIGSTOP)", fault_settings, fault_stack, tmp_path, fault_summary, inject)
