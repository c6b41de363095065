"""The same job on a real cluster manager: ``spark-submit`` to a Spark standalone master with two workers (started
here on 127.0.0.1), fed over time by a replay, gives exactly the reference rows that local mode gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import submit
from pipeline.adapters.mysql import reads
from pipeline.compose import connector_jars
from pipeline.services import spark_standalone
from pipeline.settings import MysqlUrl, Settings
from tests.cli_helpers import env_for
from tests.integration.test_ingestion import CASSETTE, cassette_trades
from tests.kafka_helpers import read_all
from tests.reference_rows import assert_rows_match, expected_rows


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[spark_standalone.Cluster]:
    started = spark_standalone.start(tmp_path / "spark-cluster", workers=2, cores=1, memory="768m")
    try:
        yield started
    finally:
        started.stop()


def test_spark_submit_on_a_standalone_cluster_gives_the_reference_rows(settings_for: Settings,
                                                                        cluster: spark_standalone.Cluster) -> None:
    url = settings_for.mysql_url
    assert url is not None and settings_for.checkpoint_dir is not None
    # Four partitions (a setting): five symbols spread over both executors' tasks.
    env = env_for(settings_for, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                  PIPELINE_TOPIC_PARTITIONS="4")
    jars = ",".join(str(j) for j in connector_jars(settings_for.cache_dir))
    log = settings_for.checkpoint_dir.parent / "spark-submit.log"
    with open(log, "wb") as out:
        job = subprocess.Popen([str(spark_standalone.spark_submit()), "--master", cluster.master_url, "--jars", jars,
                                "--executor-memory", "512m", "--total-executor-cores", "2",
                                "--conf", "spark.ui.enabled=false", submit.__file__, "--trigger-seconds", "1"],
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    trades = cassette_trades(CASSETTE)
    want = len(expected_rows(trades))
    try:
        started = settings_for.checkpoint_dir / "stream" / "metadata"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not started.exists() and job.poll() is None:
            time.sleep(0.2)
        assert started.exists(), f"the job never started on the cluster:\n{log.read_text()[-3000:]}"
        # Fed over time while the job runs: 21 recorded minutes at 20x, about a minute.
        replay = subprocess.run([sys.executable, "-m", "pipeline", "replay", "--source", str(CASSETTE),
                                 "--speed", "20x"], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert replay.returncode == 0, replay.stderr[-2000:]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None and _final_windows(url) < want:
            time.sleep(0.5)
        assert job.poll() is None, f"the job exited:\n{log.read_text()[-3000:]}"
        assert _final_windows(url) == want, f"{_final_windows(url)} of {want} windows final:\n{log.read_text()[-3000:]}"
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    assert_rows_match(url, trades)
    assert {p for p, *_ in read_all(settings_for.kafka_bootstrap or "", settings_for.topic)} == {0, 1, 2, 3}

    # It ran on the cluster: one application, an executor on each of the two workers, each given work.
    apps = cluster.state()["completedapps"] + cluster.state()["activeapps"]
    assert [a["name"] for a in apps] == ["pipeline"]
    executors = cluster.executor_dirs()
    assert sorted(executors) == ["worker-0", "worker-1"] and all(len(e) == 1 for e in executors.values()), executors
    for [directory] in executors.values():
        assert "Running task" in (directory / "stderr").read_text(), f"{directory} never ran a task"


def _final_windows(url: MysqlUrl) -> int:
    try:
        return sum(1 for r in reads.read_windows(url) if r.is_final)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
