"""`pipeline status` against real services: a topic nobody reads, the job running and caught up, a service down."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.services import procs
from pipeline.settings import Settings
from tests.cli_helpers import env_for, run
from tests.cli_helpers import ok as cli
from tests.integration.test_ingestion import CASSETTE


def _status(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    result = run(["status", "--json", *extra], env, timeout=120)
    return result.returncode, json.loads(result.stdout)


def test_status_sees_lag_then_a_caught_up_job_then_a_service_down(settings_for: Settings) -> None:
    env = env_for(settings_for)
    cli(settings_for, "replay", "--source", str(CASSETTE))
    code, report = _status(env)  # messages in the topic, nobody reads them, but not for long yet
    assert code == 0 and report["lag"] == 10_569, report  # 10,464 trades and 105 heartbeats
    time.sleep(2)
    code, report = _status(env, "--stalled-after", "1")  # now they have waited too long
    assert any("not keeping up" in p for p in report["problems"]), report["problems"]
    assert report["last_batch"] is None and report["windows_final"] == 0

    processor = subprocess.Popen([sys.executable, "-m", "pipeline", "process", "--trigger-seconds", "0.5"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            code, report = _status(env)
            # The batch's MySQL transaction commits before Spark writes its commit file; in between, status reads
            # the job's position from the ledger (caught by CI): wait for the checkpoint's word too.
            if code == 0 and report["lag"] == 0 and report["windows_final"] == 97 \
                    and report["committed_from"].startswith("checkpoint"):
                break
            time.sleep(1)
        assert code == 0 and report["ok"] and report["lag"] == 0, report
        assert report["committed_from"].startswith("checkpoint")
        assert all(p["committed"] == p["end"] for p in report["partitions"]) and report["partitions"]
        assert report["windows_final"] == 97 and report["windows_open"] == 0
        assert report["quarantined"] == 0 and report["late_trades"] == 0
        assert report["last_batch"]["age_s"] < 300
        assert sorted(c["symbol"] for c in report["coverage"]) == ["ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT",
                                                                   "SOLUSDT"]
        text = run(["status"], env).stdout
        assert text.rstrip().endswith("OK") and "97 final" in text
    finally:
        processor.terminate()
        processor.wait(timeout=60)

    kafka_down = dict(env, PIPELINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{procs.free_port()}")
    result = run(["status"], kafka_down, timeout=120)
    assert result.returncode == 1 and "kafka  DOWN" in result.stdout, result.stdout
    url = settings_for.mysql_url
    assert url is not None
    mysql_down = dict(env, PIPELINE_MYSQL_URL=dataclasses.replace(url, port=procs.free_port()).render())
    result = run(["status"], mysql_down, timeout=120)
    assert result.returncode == 1 and "mysql  DOWN" in result.stdout, result.stdout
    only_kafka = {k: v for k, v in env.items() if k != "PIPELINE_MYSQL_URL"}  # MySQL from a stack that is not there
    only_kafka["PIPELINE_STATE_DIR"] = str(Path(str(settings_for.checkpoint_dir)).parent / "no-stack")
    result = run(["status"], only_kafka, timeout=120)
    assert result.returncode == 1 and "kafka  up" in result.stdout and "mysql  DOWN" in result.stdout, result.stdout
