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


def test_the_same_upsert_twice_gives_one_row(mysql_url: MysqlUrl, mysql_admin_url: MysqlUrl) -> None:
    with pymysql.connect(**mysql_admin_url.connect_arguments()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (k VARCHAR(20) PRIMARY KEY, v DECIMAL(36,18) NOT NULL)")  # the schema owner's job
    conn = pymysql.connect(**mysql_url.connect_arguments(), autocommit=True)
    with conn, conn.cursor() as cur:
        upsert = "INSERT INTO t (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        for _ in range(2):
            cur.executemany(upsert, [("BTCUSDT", "101.000000000000000001")])
        cur.execute("SELECT k, CAST(v AS CHAR) FROM t")
        assert cur.fetchall() == (("BTCUSDT", "101.000000000000000001"),)


@pytest.mark.parametrize("account", ["mysql_url", "mysql_admin_url", "mysql_read_url"])
def test_pipeline_accounts_cannot_reach_other_databases(services: Settings, account: str) -> None:
    url = getattr(services, account)
    if url is None:
        pytest.skip(f"external services without {account}")
    with pymysql.connect(**url.connect_arguments(database=False)) as conn, conn.cursor() as cur:
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
        names = ("PIPELINE_KAFKA_BOOTSTRAP", "PIPELINE_MYSQL_URL", "PIPELINE_MYSQL_ADMIN_URL",
                 "PIPELINE_MYSQL_READ_URL")
        child = f"import os; print(*(os.environ[n] for n in {names!r}))"
        exported = subprocess.run(["bash", "-c", f'eval "$(cat)"; {sys.executable} -c "{child}"'],
                                  input=printed.stdout, capture_output=True, text=True, check=True).stdout.split()
        bootstrap, urls = exported[0], [MysqlUrl.parse(u) for u in exported[1:]]
        KafkaConsumer(bootstrap_servers=bootstrap).close()
        assert [u.user for u in urls] == ["pipeline", "pipeline_admin", "pipeline_reader"]
        assert len({u.password for u in urls}) == 3
        for url in urls:
            pymysql.connect(**url.connect_arguments()).close()
        status = _cli(["stack", "status"], env).stdout
        assert not any(url.password in status for url in urls)

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


def test_stack_down_leaves_a_process_that_reuses_a_recorded_pid_alone(tmp_path: Path) -> None:
    """After a crash or a reboot a recorded pid may belong to anything: `down` and `up` must not signal it."""
    import json

    from pipeline.services import stack

    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)  # its own process group, as our daemons
    try:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        identity = procs.identity(stranger.pid)
        assert identity is not None
        # What `up` recorded for a MariaDB that has since died, and whose pid the stranger now holds:
        recorded = {"pid": stranger.pid, "identity": {"start_time": int(str(identity["start_time"])) - 1,
                                                      "cmdline": "/usr/sbin/mariadbd --datadir=/gone"},
                    "data_dir": str(tmp_path / "run" / "mysql"), "log": str(tmp_path / "mysql.log")}
        legacy = {"pid": stranger.pid, "data_dir": str(tmp_path / "run" / "kafka"), "log": "x"}  # before identities
        state = {"backend": "processes", "run_dir": str(tmp_path / "run"), "bootstrap": "127.0.0.1:1",
                 "url": "mysql://pipeline:pw@127.0.0.1:1/pipeline", "mysql": recorded, "kafka": legacy}
        (state_dir / "stack.json").write_text(json.dumps(state))
        settings = Settings.from_mapping({"PIPELINE_STATE_DIR": str(state_dir)})

        assert not procs.is_ours(stranger.pid, recorded) and not procs.is_ours(stranger.pid, legacy)
        _, services = stack.status(settings)
        assert [s.ok for s in services] == [False, False]  # its pid is alive, but it is not our service
        assert stack.down(settings) is True
        assert stranger.poll() is None and procs.alive(stranger.pid)
        # The real identity is recognised, and then (only then) stopped.
        assert procs.is_ours(stranger.pid, {"pid": stranger.pid, "identity": identity})
        assert procs.stop_recorded({"pid": stranger.pid, "identity": identity}) is True
        assert stranger.wait(timeout=10) is not None
    finally:
        stranger.kill()
        stranger.wait()


def test_the_state_file_is_private(services: Settings) -> None:
    state = services.state_dir / "stack.json"
    if not state.exists():
        pytest.skip("external services: no local state file")
    assert state.stat().st_mode & 0o777 == 0o600
