"""The pure parts of `pipeline status` (offsets from a checkpoint and from the ledger, the screen) and of the demo's
live view."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pipeline.adapters import checkpoint
from pipeline.adapters.mysql import ledger
from pipeline.commands import demo, status
from pipeline.core.windows import StoredWindow
from tests.reference_rows import stored_window


def _batch(checkpoint: Path, n: int, ends: dict[str, dict[str, int]], committed: bool) -> None:
    (checkpoint / "stream" / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "stream" / "commits").mkdir(parents=True, exist_ok=True)
    (checkpoint / "stream" / "offsets" / str(n)).write_text(
        'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n' + json.dumps(ends) + "\n")
    if committed:
        (checkpoint / "stream" / "commits" / str(n)).write_text('v1\n{"nextBatchWatermarkMs":0}\n')


def test_the_checkpoint_gives_the_newest_committed_batchs_end_offsets(tmp_path: Path) -> None:
    assert checkpoint.committed_ends(tmp_path / "none") is None
    _batch(tmp_path, 9, {"t": {"0": 10, "1": 4}}, committed=True)
    _batch(tmp_path, 10, {"t": {"0": 25, "1": 4}}, committed=True)
    _batch(tmp_path, 11, {"t": {"0": 40, "1": 9}}, committed=False)  # planned, not committed: not counted
    assert checkpoint.committed_ends(tmp_path) == {"t": {0: 25, 1: 4}}


def test_the_ledger_gives_one_past_the_highest_offset_read_per_partition() -> None:
    texts = ["t/0:0-99 t/1:0-9 other/0:0-500", "t/0:100-149", "", "t/2:5-5 t.x/0:0-999"]
    assert ledger.read_ends(texts, "t") == {0: 150, 1: 10, 2: 6}


def test_the_screen_names_every_problem_and_says_ok_only_without_any() -> None:
    report = {"backend": "external", "topic": "t", "services": [{"name": "kafka", "ok": False, "detail": "x"}],
              "problems": ["kafka is down: x"], "ok": False}
    text = status.render(report)
    assert "kafka  DOWN" in text and "PROBLEMS" in text and "kafka is down" in text
    healthy = {"backend": "processes", "topic": "t", "services": [], "problems": [], "ok": True,
               "partitions": [{"partition": 0, "end": 1500, "committed": 1500, "lag": 0}],
               "committed_from": "ledger", "last_batch": None, "windows_open": 2, "windows_final": 7,
               "late_trades": 1, "quarantined": 3, "coverage": [{"symbol": "BTCUSDT", "complete_before": "z",
                                                                 "behind_now_s": 7200.0}]}
    text = status.render(healthy)
    assert text.endswith("OK") and "2 open, 7 final" in text and "late trades 1" in text and "2.0 h" in text
    assert "1,500" in text


def _row(symbol: str, minute: int, final: bool, close: str, trades: int) -> StoredWindow:
    return stored_window(symbol, datetime(2026, 1, 1, 12, minute), is_final=final, close_price=Decimal(close),
                         trade_count=trades, vwap=Decimal(close))


def test_the_live_view_shows_each_symbols_forming_minute_and_its_final_ones() -> None:
    from rich.console import Console

    watch = demo.Watch(total_trades=1000, first_ms=1_767_268_800_000, last_ms=1_767_270_000_000)
    watch.sent_ms = 1_767_269_400_000  # half way
    rows = [_row("BTCUSDT", 0, True, "97000.10", 300), _row("BTCUSDT", 1, True, "97001.20", 280),
            _row("BTCUSDT", 2, False, "97002.30", 120), _row("ADAUSDT", 0, True, "0.9517", 80)]
    console = Console(record=True, width=140, force_terminal=False)
    console.print(demo.view(rows, watch, 500, "running"))
    text = console.export_text()
    btc = next(line for line in text.splitlines() if line.startswith("BTCUSDT"))
    ada = next(line for line in text.splitlines() if line.startswith("ADAUSDT"))
    assert "12:02 (open)" in btc and "97,002.30" in btc and "120" in btc and "12:01 final" in btc
    assert " 2 " in btc  # two final minutes
    assert "12:00 final" in ada and "(open)" not in ada
    assert "12:10:00 UTC" in text and "500 of 1,000" in text and "running" in text
    empty = Console(record=True, width=140, force_terminal=False)
    empty.print(demo.view([], watch, 0, "starting"))
    assert "the Spark job is starting" in empty.export_text()
