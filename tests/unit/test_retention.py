"""Retention's rules on plain values: the cutoffs, which rows a re-execution or a re-read still needs, where a
table's walk stops, the settings, and what the checkpoint's files say may be read again."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.adapters.mysql.retention import (
    LEDGER,
    Pruned,
    Replay,
    Row,
    batch_needed,
    cutoff,
    deletable,
    message_needed,
)
from pipeline.commands.prune import line, replay_of
from pipeline.errors import ConfigError
from pipeline.settings import Settings

NOW = datetime(2026, 12, 3, 12, 30)


def test_a_cutoff_is_that_many_days_before_now_and_zero_days_keep_forever() -> None:
    assert cutoff(NOW, 7) == datetime(2026, 11, 26, 12, 30)
    assert cutoff(NOW, 1) == datetime(2026, 12, 2, 12, 30)
    assert cutoff(NOW, 0) is None


def test_the_walk_deletes_old_rows_nothing_needs_and_stops_at_the_first_new_one() -> None:
    before = datetime(2026, 11, 26)
    rows = [Row(1, datetime(2026, 11, 1), ("a",)), Row(2, datetime(2026, 11, 2), ("needed",)),
            Row(5, datetime(2026, 11, 25, 23, 59), ("a",)), Row(6, before, ("a",)),
            Row(7, datetime(2026, 11, 3), ("a",))]  # older, but after a new row: the next run's

    def needed(row: Row) -> bool:
        return row.key == ("needed",)

    assert deletable(rows, before, needed) == ([1, 5], True)  # written exactly at the cutoff: kept
    assert deletable(rows[:3], before, needed) == ([1, 5], False)  # all old: the next chunk may hold more
    assert deletable([], before, needed) == ([], False)


REPLAY = Replay("run-a", committed_batch=41, topic="trades", committed={0: 1_000, 1: 500})


@pytest.mark.parametrize(("key", "needed"), [
    (("run-a", 42), True),  # logged after the newest commit: Spark may execute it again
    (("run-a", 43), True),
    (("run-a", 41), False),  # committed: never executed again
    (("run-a", 0), False),
    (("run-b", 42), False),  # another checkpoint's (a deleted one, a backfill's)
])
def test_the_ledger_keeps_the_checkpoints_batches_after_its_newest_commit(key: tuple[str, int], needed: bool) -> None:
    row = Row(1, NOW, key)
    assert batch_needed(row, REPLAY) is needed
    assert batch_needed(row, None) is False  # no readable checkpoint: age and the newest batches only


def test_a_checkpoint_with_no_commit_may_execute_its_first_batch_again() -> None:
    assert batch_needed(Row(1, NOW, ("run-a", 0)), Replay("run-a", -1, "trades", {}))


@pytest.mark.parametrize(("key", "needed"), [
    (("trades", 0, 1_000), True),  # at the committed end: read again
    (("trades", 0, 999), False),
    (("trades", 1, 700), True),
    (("trades", 2, 5), True),  # a partition the checkpoint never committed: all of it is read again
    (("trades.backfill.x", 0, 5_000), False),  # another topic: never read by this checkpoint
])
def test_quarantine_keeps_the_messages_the_checkpoint_will_read_again(key: tuple[str, int, int],
                                                                      needed: bool) -> None:
    row = Row(1, NOW, key)
    assert message_needed(row, REPLAY) is needed
    assert message_needed(row, None) is False


def test_retention_settings_default_safely_and_are_checked() -> None:
    defaults = Settings.from_mapping({})
    assert (defaults.retain_ledger_days, defaults.retain_quarantine_days, defaults.retain_repairs_days) == (7, 90, 365)
    chosen = Settings.from_mapping({"PIPELINE_RETAIN_LEDGER_DAYS": "2", "PIPELINE_RETAIN_QUARANTINE_DAYS": "0",
                                    "PIPELINE_RETAIN_REPAIRS_DAYS": " 30 "})
    assert (chosen.retain_ledger_days, chosen.retain_quarantine_days, chosen.retain_repairs_days) == (2, 0, 30)
    assert Settings.from_mapping(chosen.environment()) == chosen
    for name in ("PIPELINE_RETAIN_LEDGER_DAYS", "PIPELINE_RETAIN_QUARANTINE_DAYS", "PIPELINE_RETAIN_REPAIRS_DAYS"):
        for bad in ("-1", "7d", "1.5", "36501"):
            with pytest.raises(ConfigError, match=name):
                Settings.from_mapping({name: bad})


def _batch(query: Path, batch_id: int, ends: dict[str, dict[str, int]], committed: bool) -> None:
    """Batch ``batch_id`` as Spark logs it: ``offsets/N`` when it starts, ``commits/N`` when it ends."""
    (query / "offsets").mkdir(parents=True, exist_ok=True)
    (query / "commits").mkdir(parents=True, exist_ok=True)
    (query / "offsets" / str(batch_id)).write_text(
        f'v1\n{{"batchWatermarkMs":0,"batchTimestampMs":{1_800_000_000_000 + batch_id}}}\n{json.dumps(ends)}')
    if committed:
        (query / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_what_the_checkpoint_may_read_again_comes_from_its_files(tmp_path: Path) -> None:
    query = tmp_path / "stream"
    query.mkdir()
    assert replay_of(tmp_path, "trades") is None  # no metadata yet: not started
    (query / "metadata").write_text('{"id":"6f1c1c1e-0000-4000-8000-000000000001"}\n')
    assert replay_of(tmp_path, "trades") == Replay("6f1c1c1e-0000-4000-8000-000000000001", -1, "trades", {})
    for batch_id in range(5, 9):
        _batch(query, batch_id, {"trades": {"0": 100 * batch_id, "1": 7}}, committed=batch_id < 8)
    assert replay_of(tmp_path, "trades") == Replay("6f1c1c1e-0000-4000-8000-000000000001", 7, "trades",
                                                   {0: 700, 1: 7})
    assert replay_of(tmp_path, "other") == Replay("6f1c1c1e-0000-4000-8000-000000000001", 7, "other", {})
    assert replay_of("hdfs://nn:8020/ckpt", "trades") is None  # not readable here


def test_each_table_says_what_it_deleted_or_that_it_keeps_forever() -> None:
    assert line(Pruned(LEDGER, datetime(2026, 11, 26, 12), 12_345), 7, dry_run=False) == (
        "pipeline_batches: deleted 12,345 rows with applied_at before 2026-11-26 12:00:00 UTC "
        "(PIPELINE_RETAIN_LEDGER_DAYS=7)")
    assert line(Pruned(LEDGER, datetime(2026, 11, 26, 12), 3), 7, dry_run=True).startswith(
        "pipeline_batches: would delete 3 rows")
    assert line(Pruned(LEDGER, None, 0), 0, dry_run=False) == (
        "pipeline_batches: kept forever (PIPELINE_RETAIN_LEDGER_DAYS=0)")
