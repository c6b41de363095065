"""Spark's Kafka source logs in with the PIPELINE_KAFKA_* settings (issue 10): the kafka.sasl.jaas.config line
built for SCRAM, with a password that needs quoting, against a listener that demands SASL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.settings import Settings
from tests import cli_helpers
from tests.archive_builder import synthetic_trades, write_archive
from tests.conftest import sasl_env
from tests.reference_rows import assert_rows_match


def test_process_reads_a_sasl_listener(sasl_kafka: str, settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("ADAUSDT", 1_735_689_600_000, 300, seed=7, spacing_ms=3_000)
    archive = write_archive(tmp_path, "ADAUSDT", "2025-01-01", trades, zipped=True, checksum=True)
    env = cli_helpers.env_for(dataclasses.replace(settings_for, kafka_bootstrap=sasl_kafka),
                              **sasl_env("SCRAM-SHA-256"))
    for args in (["replay", "--source", str(archive)], ["process", "--until-idle"]):
        result = cli_helpers.run(args, env, timeout=600)
        assert result.returncode == 0, f"pipeline {' '.join(args)} failed:\n{result.stderr[-3000:]}"
        assert sasl_env("PLAIN")["PIPELINE_KAFKA_SASL_PLAIN_PASSWORD"] not in result.stdout + result.stderr
    assert settings_for.mysql_url is not None
    assert_rows_match(settings_for.mysql_url, trades)
