"""A USD-M futures aggTrades archive (same file name as a spot one, a header row, 7 columns) given to `pipeline
replay` against a real Kafka: one clear line, a non-zero exit, and nothing published, even beside a good spot file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.cli_helpers import run as cli
from tests.kafka_helpers import read_all

START = 1_735_689_600_000  # 2025-01-01


@pytest.mark.parametrize("with_spot_file", [False, True])
def test_replaying_a_futures_archive_fails_with_one_line_and_publishes_nothing(
        settings_for: Settings, tmp_path: Path, with_spot_file: bool) -> None:
    (tmp_path / "um").mkdir()
    futures = write_archive(tmp_path / "um", "BTCUSDT", "2025-01-01",
                            synthetic_trades("BTCUSDT", START, 200, seed=11), futures=True, zipped=True)
    args = ["replay", "--source", str(futures), "--speed", "max"]
    if with_spot_file:  # listed first: the futures file must still stop everything before publishing
        spot = write_archive(tmp_path, "ETHUSDT", "2025-01-01", synthetic_trades("ETHUSDT", START, 200, seed=12))
        args[1:1] = ["--source", str(spot)]
    result = cli(args, env_for(settings_for), timeout=180)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "this looks like a USD-M futures archive (header row 'agg_trade_id,price,quantity," in lines[0]
    assert lines[0].endswith("only spot aggTrades archives are accepted")
    assert read_all(settings_for.kafka_bootstrap or "", settings_for.topic) == []  # not a trade, not a heartbeat
