"""An archive vouches only for what it proves it holds: a truncated download that keeps its daily name, replayed
through the stream, leaves the minutes it does not prove open for the whole day replayed after it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import ok as cli
from tests.kafka_helpers import read_all
from tests.reference_rows import assert_rows_match

JAN_1_2025 = 1_735_689_600_000
SPLIT_MS = JAN_1_2025 + 8 * 60_000


def test_a_truncated_daily_archive_leaves_the_rest_of_its_day_to_the_whole_one(
        settings_for: Settings, tmp_path: Path) -> None:
    """The measured failure, at its smallest (one Spark run): the newer half of a day in files that keep the daily
    name (no checksum; cut inside the millisecond that starts minute 8), then the whole day as Binance publishes it
    (zip and CHECKSUM). The halves vouch only for the times strictly inside their trades, so the older trades,
    published after them, are not late: every window exact and final. (When a name vouched for its whole day, the
    older minutes were declared complete before their trades came, and every one of those trades was late.)"""
    url, bootstrap = settings_for.mysql_url, settings_for.kafka_bootstrap or ""
    assert url is not None
    days, halves = {}, {}
    for seed, (symbol, zipped) in enumerate((("BTCUSDT", False), ("ETHUSDT", True))):
        day = synthetic_trades(symbol, JAN_1_2025, 480, seed=60 + seed, spacing_ms=2_000)  # about 16 minutes
        cut = next(i for i, t in enumerate(day) if t.event_time_ms >= SPLIT_MS)
        for i in (cut - 1, cut):  # the older half's last trade and the newer half's first share 00:08:00.000
            day[i] = dataclasses.replace(day[i], event_time_ms=SPLIT_MS)
        days[symbol], halves[symbol] = day, day[cut:]
        for kind, trades, verified in (("newer", day[cut:], False), ("whole", day, True)):
            (tmp_path / kind).mkdir(exist_ok=True)
            write_archive(tmp_path / kind, symbol, "2025-01-01", trades, zipped=zipped or verified, checksum=verified)

    newer = cli(settings_for, "replay", "--source", str(tmp_path / "newer"))
    assert newer.stdout.count("is not verified complete") == 2, newer.stdout
    beats = {(v["s"], v["from"], v["T"]) for v in (json.loads(m) for *_, m in read_all(bootstrap, settings_for.topic))
             if v["type"] == "heartbeat"}
    assert beats == {(s, h[0].event_time_ms + 1, h[-1].event_time_ms) for s, h in halves.items()}

    whole = cli(settings_for, "replay", "--source", str(tmp_path / "whole"))
    held, older = sum(map(len, halves.values())), sum(len(days[s]) - len(halves[s]) for s in days)
    assert f"published {older}, invalid 0, rejected 0, duplicates skipped {held}," in whole.stdout, whole.stdout
    assert "is not verified" not in whole.stdout
    processed = cli(settings_for, "process", "--until-idle")
    assert "0 late trades" in processed.stdout, processed.stdout
    assert_rows_match(url, [t for day in days.values() for t in day])  # every window exact and final
