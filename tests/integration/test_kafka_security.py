"""PIPELINE_KAFKA_* security settings reach every Kafka client (issue 10): against the local plaintext broker, and
against a broker whose listener demands SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from pipeline.adapters import kafka_io
from pipeline.core import messages
from pipeline.errors import ServiceError
from pipeline.settings import Settings
from tests import cli_helpers
from tests.archive_builder import synthetic_trades, write_archive
from tests.conftest import sasl_env

START_MS = 1_735_689_600_000  # 2025-01-01


def _round_trip(bootstrap: str, topic: str, options: dict[str, object]) -> dict[str, messages.ResumePoint]:
    """Create the topic, publish two trades and a heartbeat, and read the resume point back: every client kind."""
    kafka_io.ensure_topic(bootstrap, topic, options=options)
    sink = kafka_io.TradeSink(bootstrap, topic, options=options)
    try:
        for trade in synthetic_trades("BTCUSDT", START_MS, 2, seed=1):
            sink.send_trade(trade)
        sink.send_heartbeat(messages.Heartbeat("BTCUSDT", START_MS, START_MS + 60_000))
        assert sink.flush() == 3
    finally:
        sink.close()
    return kafka_io.resume_points(bootstrap, topic, ["BTCUSDT"], options=options)


def test_explicit_plaintext_still_works_and_topics_get_one_replica_on_one_broker(services: Settings,
                                                                                 topic: str) -> None:
    settings = Settings.from_mapping({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert settings.kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert services.kafka_bootstrap is not None
    points = _round_trip(services.kafka_bootstrap, topic, settings.kafka_client_options())
    assert points["BTCUSDT"].last_agg_id == 2 and points["BTCUSDT"].complete_before_ms == START_MS + 60_000
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    assert {len(p["replica_nodes"]) for p in described["partitions"]} == {kafka_io.replication_factor(brokers)} == {1}


def test_an_unsupported_kafka_setting_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PIPELINE_STATE_DIR=str(tmp_path), PIPELINE_KAFKA_SASL_JAAS_CONFIG="anything goes",
               PIPELINE_KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    result = cli_helpers.run(["stack", "status"], env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "PIPELINE_KAFKA_SASL_JAAS_CONFIG" in result.stderr


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_client_logs_in_with_sasl(sasl_kafka: str, topic: str, mechanism: str) -> None:
    settings = Settings.from_mapping(sasl_env(mechanism))
    points = _round_trip(sasl_kafka, topic, settings.kafka_client_options())
    assert points["BTCUSDT"].last_agg_id == 2
    assert kafka_io.published_ranges(sasl_kafka, topic, ["BTCUSDT"],
                                     options=settings.kafka_client_options()) == {"BTCUSDT": [(1, 2)]}


def test_the_listener_refuses_a_client_without_credentials(sasl_kafka: str, topic: str) -> None:
    with pytest.raises(ServiceError, match="unreachable or refused"):
        kafka_io.ensure_topic(sasl_kafka, topic, options={})


def test_an_adapter_reads_no_environment_the_commands_hand_it_the_settings(
        monkeypatch: pytest.MonkeyPatch, sasl_kafka: str, settings_for: Settings, topic: str) -> None:
    """The security settings come from the composition root, never from a client's own look at the environment:
    with them only in the environment, a bare client is refused by the SASL listener; ``pipeline status`` (handed
    them by the root) reads the topic through it."""
    for name, value in sasl_env("SCRAM-SHA-256").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ServiceError):
        kafka_io.ensure_topic(sasl_kafka, topic)
    env = cli_helpers.env_for(dataclasses.replace(settings_for, kafka_bootstrap=sasl_kafka, topic=topic),
                              **sasl_env("SCRAM-SHA-256"))
    kafka_io.ensure_topic(sasl_kafka, topic, options=Settings.from_mapping(env).kafka_client_options())
    result = cli_helpers.run(["status", "--json"], env, timeout=120)
    report = json.loads(result.stdout)
    assert [s["ok"] for s in report["services"] if s["name"] == "kafka"] == [True], result.stdout[-2000:]
    assert [p["partition"] for p in report["partitions"]] == [0, 1, 2]  # the topic read through SASL


def test_replay_through_a_sasl_listener(sasl_kafka: str, settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("SOLUSDT", START_MS, 50, seed=3)
    archive = write_archive(tmp_path, "SOLUSDT", "2025-01-01", trades)
    env = cli_helpers.env_for(dataclasses.replace(settings_for, kafka_bootstrap=sasl_kafka),
                              **sasl_env("SCRAM-SHA-512"))
    result = cli_helpers.run(["replay", "--source", str(archive)], env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sasl_env("PLAIN")["PIPELINE_KAFKA_SASL_PLAIN_PASSWORD"] not in result.stdout + result.stderr
    options = Settings.from_mapping(sasl_env("PLAIN")).kafka_client_options()
    assert kafka_io.last_agg_ids(sasl_kafka, settings_for.topic, ["SOLUSDT"], options=options) == {"SOLUSDT": 50}
