"""Helpers for the whole-pipeline tests: run the CLI, and compare MySQL's rows with the reference aggregator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import pytest

from pipeline.adapters import mysql_store
from pipeline.core import windows
from pipeline.core.trades import Trade
from pipeline.settings import MysqlUrl, Settings


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    assert settings.kafka_bootstrap and settings.mysql_url
    env.update(PIPELINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, PIPELINE_MYSQL_URL=settings.mysql_url.render(),
               PIPELINE_TOPIC=settings.topic, PIPELINE_CHECKPOINT_DIR=str(settings.checkpoint_dir),
               PIPELINE_CACHE_DIR=str(settings.cache_dir), PIPELINE_WATERMARK_SECONDS=str(settings.watermark_seconds),
               **extra)
    return env


def cli(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env_for(settings), capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"pipeline {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def expected_rows(trades: Iterable[Trade]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The reference aggregator's rows, keyed and shaped like ``mysql_store.read_windows``."""
    out = {}
    for row in windows.aggregate(trades).values():
        out[(row.symbol, mysql_store.utc(row.start_ms))] = {
            "symbol": row.symbol, "start_time": mysql_store.utc(row.start_ms), "end_time": mysql_store.utc(row.end_ms),
            "average_price": row.average_price, "open_price": row.open_price, "high_price": row.high_price,
            "low_price": row.low_price, "close_price": row.close_price, "volume": row.volume,
            "quote_volume": row.quote_volume, "vwap": row.vwap, "trade_count": row.trade_count,
            "agg_trade_count": row.agg_trade_count,
        }
    return out


def actual_rows(url: MysqlUrl) -> dict[tuple[str, Any], dict[str, Any]]:
    return {(r["symbol"], r["start_time"]): r for r in mysql_store.read_windows(url)}


def assert_rows_match(url: MysqlUrl, trades: Iterable[Trade], *, all_final: bool = True) -> None:
    expected, actual = expected_rows(trades), actual_rows(url)
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))[:5]}, unexpected {sorted(set(actual) - set(expected))[:5]}")
    mismatches = []
    for key, want in expected.items():
        got = actual[key]
        for column, value in want.items():
            if got[column] != value:
                mismatches.append(f"{key} {column}: MySQL {got[column]!r} != reference {value!r}")
    assert not mismatches, "\n".join(mismatches[:20])
    if all_final:
        assert all(r["is_final"] == 1 for r in actual.values()), "every closed window should be final"


@pytest.fixture
def quick_settings(settings_for: Settings) -> Settings:
    return settings_for
