"""``pipeline bench --quick`` as CI runs it: a smoke test. Every figure is in the JSON and the table; nothing is
asserted about speed (targets are the benchmark's report, never a test's)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymysql

from pipeline.settings import Settings
from tests.cli_helpers import env_for
from tests.conftest import admin_url

FIGURES = [
    ("raw_produce", "messages_per_s"),
    ("spark_read_count", "steady_s"), ("spark_read_count", "steady_trades_per_s"), ("spark_read_count", "wall_s"),
    ("processor", "steady_s"), ("processor", "steady_trades_per_s"), ("processor", "wall_s"),
    ("processor_vs_spark_read",),
    ("replay", "trades_per_s"), ("replay", "wall_s"), ("replay_vs_raw_produce",),
    ("freshness", "ack_to_visible_s", "p50"), ("freshness", "ack_to_visible_s", "p95"),
    ("freshness", "ack_to_visible_s", "p99"),
    ("freshness", "final_after_window_end_plus_lag_s", "p50"),
    ("freshness", "final_after_window_end_plus_lag_s", "p95"),
    ("freshness", "final_after_window_end_plus_lag_s", "max"),
    ("first_batch_s",), ("freshness", "final_after_heartbeat_ack_s", "max"),
    ("spark_floor", "batch_ms", "p50"), ("spark_floor", "batch_ms", "p99"),
    ("ledger", "empty", "batch_ms_after_warmup", "p50"), ("ledger", "month", "batch_ms_after_warmup", "p50"),
    ("ledger", "p50_ratio_month_to_empty",),
    ("peak_rss_mib", "spark_driver"), ("peak_rss_mib", "kafka"), ("peak_rss_mib", "mysql"),
]


def _at(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        assert isinstance(value, dict) and key in value, f"{'.'.join(path)} missing from the JSON"
        value = value[key]
    return value


def _bench_databases(services: Settings) -> set[str]:
    url = admin_url(services)
    with pymysql.connect(**url.connect_arguments(database=False)) as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'pipeline\\_bench\\_%'")
        return {row[0] for row in cur.fetchall()}


def test_bench_quick_reports_every_figure(services: Settings, tmp_path: Path) -> None:
    read = services.read_url()
    assert read is not None
    env = env_for(dataclasses.replace(services, topic="unused"),
                  PIPELINE_MYSQL_ADMIN_URL=admin_url(services).render(), PIPELINE_MYSQL_READ_URL=read.render())
    databases_before = _bench_databases(services)
    out = tmp_path / "tmp" / "bench.json"
    result = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--quick", "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["quick"] is True and report["sizes"]["trades"] == 20_000
    for path in FIGURES:
        value = _at(report["figures"], path)
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{'.'.join(path)} = {value!r}"
    # Every target was measured (pass or fail: which one is the report's business, not the test's).
    assert report["targets"] and all(t["pass"] in (True, False) for t in report["targets"])
    # What the speeds are measured on is right: every trade counted, every live trade seen, finals seen.
    figures = report["figures"]
    assert figures["processor"]["trades_counted"] == 20_000
    assert figures["spark_read_count"]["messages_counted"] == figures["raw_produce"]["messages"]
    assert figures["replay"]["trades"] == 20_000
    fresh = figures["freshness"]
    assert fresh["trades_visible"] == fresh["trades_sent"] > 0
    assert fresh["final_after_window_end_plus_lag_s"]["n"] >= 1
    assert figures["ledger"]["month"]["ledger_run_id_is_the_seeded_one"] is True
    (outage,) = figures["outage"]  # --quick: 5 symbols x 2 h
    assert (outage["symbols"], outage["minutes"], outage["heartbeats"]) == (5, 120, 600)
    assert outage["exact_count"] is True and outage["windows_final"] == outage["windows"] > 0
    assert isinstance(outage["catch_up_s"], float) and len(figures["freshness_runs"]) == 1

    # One table on stdout, progress on stderr, and nothing left behind.
    for row in ("processor, steady", "Spark read + count", "replay --speed max", "kafka-python raw",
                "freshness: ack -> visible", "final row after the covering heartbeat's ack", "first committed batch",
                "catch-up after 5 symbols x 2 h down", "Spark's floor", "ledger rows", "peak RSS"):
        assert row in result.stdout
    assert f"JSON: {out.resolve()}" in result.stdout
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert step in result.stderr
    assert _bench_databases(services) == databases_before
    assert not [t for t in _topics(services) if t.startswith("bench.") and t.endswith(report["run_id"])]


def _topics(services: Settings) -> set[str]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap, **services.kafka_client_options())
    try:
        return set(admin.list_topics())
    finally:
        admin.close()
