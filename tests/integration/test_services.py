"""The services layer against real Kafka and MySQL: round trips, upserts, and the `pipeline stack` commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pymysql
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from pipeline.services import containers, procs
from pipeline.settings import MysqlUrl, Settings


def test_message_round_trips_through_the_broker(services: Settings, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all", enable_idempotence=True)
    payload = b'{"v": 1, "price": "0.00141342"}\x00\xff'
    producer.send(topic, key=b"BTCUSDT", value=payload).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=services.kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    records = list(consumer)
    consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"BTCUSDT", payload)]


def test_the_same_upsert_twice_gives_one_row(mysql_url: MysqlUrl) -> None:
    conn = pymysql.connect(host=mysql_url.host, port=mysql_url.port, user=mysql_url.user,
                           password=mysql_url.password, database=mysql_url.database, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (k VARCHAR(20) PRIMARY KEY, v DECIMAL(36,18) NOT NULL)")
        upsert = "INSERT INTO t (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        for _ in range(2):
            cur.executemany(upsert, [("BTCUSDT", "101.000000000000000001")])
        cur.execute("SELECT k, CAST(v AS CHAR) FROM t")
        assert cur.fetchall() == (("BTCUSDT", "101.000000000000000001"),)


def test_pipeline_user_cannot_reach_other_databases(services: Settings) -> None:
    url = services.mysql_url
    assert url is not None
    with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password) as conn, \
            conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("CREATE DATABASE not_the_pipelines")
        cur.execute("SHOW DATABASES")
        visible = {row[0] for row in cur.fetchall()}
    assert "mysql" not in visible
    assert url.database in visible


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def test_stack_commands_from_separate_shells(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_STATE_DIR"] = str(tmp_path / "state")
    env["PIPELINE_STACK_BACKEND"] = "processes"
    try:
        first = _cli(["stack", "up"], env)
        assert first.returncode == 0, first.stderr
        assert "stack started (processes)" in first.stdout
        again = _cli(["stack", "up"], env)  # idempotent
        assert again.returncode == 0 and "already running" in again.stdout

        printed = _cli(["stack", "env"], env)
        assert printed.returncode == 0
        assert printed.stdout.startswith("PIPELINE_KAFKA_BOOTSTRAP=")
        # eval'd in one shell, the settings reach that shell's child processes:
        child = "import os; print(os.environ['PIPELINE_KAFKA_BOOTSTRAP']); print(os.environ['PIPELINE_MYSQL_URL'])"
        exported = subprocess.run(["bash", "-c", f'eval "$(cat)"; {sys.executable} -c "{child}"'],
                                  input=printed.stdout, capture_output=True, text=True, check=True).stdout.split()
        bootstrap, url = exported[0], MysqlUrl.parse(exported[1])
        KafkaConsumer(bootstrap_servers=bootstrap).close()
        pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                        database=url.database).close()
        assert url.password not in _cli(["stack", "status"], env).stdout

        healthy = _cli(["stack", "status"], env)
        assert healthy.returncode == 0 and "kafka: up" in healthy.stdout and "mysql: up" in healthy.stdout

        import json
        state = json.loads((tmp_path / "state" / "stack.json").read_text())
        kafka_pid, mysql_pid = state["kafka"]["pid"], state["mysql"]["pid"]
        os.kill(kafka_pid, signal.SIGKILL)
        assert not _wait_dead(kafka_pid)
        broken = _cli(["stack", "status"], env)
        assert broken.returncode == 1
        assert "kafka: DOWN" in broken.stdout and "mysql: up" in broken.stdout
    finally:
        stopped = _cli(["stack", "down"], env)
    assert stopped.returncode == 0
    assert not procs.alive(kafka_pid) and not procs.alive(mysql_pid)
    assert _cli(["stack", "status"], env).returncode == 1  # "not running"


def _wait_dead(pid: int) -> bool:
    import time

    for _ in range(50):
        if not procs.alive(pid):
            return False
        time.sleep(0.1)
    return True


def test_env_without_stack_or_settings_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_STATE_DIR"] = str(tmp_path)
    result = _cli(["stack", "env"], env)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "pipeline stack up" in result.stderr


def test_containers_backend(tmp_path: Path) -> None:
    usable, reason = containers.docker_usable()
    if not usable:
        pytest.skip(f"containers backend unavailable here: {reason}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_STATE_DIR"] = str(tmp_path / "state")
    env["PIPELINE_STACK_BACKEND"] = "containers"
    try:
        up = _cli(["stack", "up"], env)
        assert up.returncode == 0, up.stderr
        assert "(containers)" in up.stdout
        assert _cli(["stack", "status"], env).returncode == 0
    finally:
        assert _cli(["stack", "down"], env).returncode == 0


def test_a_daemon_whose_start_up_fails_is_not_left_running(tmp_path: Path) -> None:
    pid = procs.spawn(["sleep", "600"], tmp_path / "sleep.log")
    with pytest.raises(RuntimeError), procs.stopped_on_failure(pid):
        raise RuntimeError("readiness check failed")
    assert not procs.alive(pid)


def test_the_state_file_is_private(services: Settings) -> None:
    state = services.state_dir / "stack.json"
    if not state.exists():
        pytest.skip("external services: no local state file")
    assert state.stat().st_mode & 0o777 == 0o600
