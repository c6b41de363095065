"""Producer and replay against a real Kafka broker: every valid trade exactly once, in order per symbol."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from pipeline.adapters import cassettes
from pipeline.cli import main
from pipeline.core.trades import Trade, invalid_reason, parse_rest
from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.cli_helpers import run as cli
from tests.kafka_helpers import read_all, trades_in

ROOT = Path(__file__).resolve().parents[2]
CASSETTE = ROOT / "fixtures" / "cassettes" / "binance-5-symbols-20min.yaml"


def cassette_trades(path: Path) -> list[Trade]:
    """Every aggTrade the recorded answers hold, read straight from the YAML (not through the poller)."""
    out = []
    for interaction in yaml.safe_load(path.read_text())["interactions"]:
        uri = interaction["request"]["uri"]
        if "/aggTrades" not in uri or ("fromId=" not in uri and "startTime=" not in uri):
            continue  # klines, time, or a request that locates the first id
        symbol = uri.split("symbol=")[1].split("&")[0]
        out.extend(parse_rest(symbol, r) for r in json.loads(interaction["response"]["body"]["string"]))
    return out


def assert_exactly_once_in_order(published: list[Trade], expected: list[Trade]) -> None:
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for t in published:
        by_symbol[t.symbol].append(t.agg_id)
    for symbol, ids in by_symbol.items():
        assert ids == sorted(set(ids)), f"{symbol}: out of order or duplicated"
    assert sorted(published, key=lambda t: (t.symbol, t.agg_id)) == \
        sorted(expected, key=lambda t: (t.symbol, t.agg_id))


def test_replaying_the_bundled_cassette_publishes_every_valid_trade_once(settings_for: Settings) -> None:
    env = env_for(settings_for)
    first = cli(["replay", "--source", str(CASSETTE), "--speed", "max"], env)
    assert first.returncode == 0, first.stderr
    expected = [t for t in cassette_trades(CASSETTE) if invalid_reason(t) is None]
    assert len(expected) > 10_000
    assert f"published {len(expected)}, invalid 1," in first.stdout
    assert "gaps 0" in first.stdout
    assert_exactly_once_in_order(trades_in(settings_for.kafka_bootstrap or "", settings_for.topic), expected)

    again = cli(["replay", "--source", str(CASSETTE)], env)  # a second replay resumes past everything
    assert again.returncode == 0, again.stderr
    assert "published 0," in again.stdout
    assert_exactly_once_in_order(trades_in(settings_for.kafka_bootstrap or "", settings_for.topic), expected)


def test_csv_and_zip_archives_in_ms_and_us_replay_together(settings_for: Settings, tmp_path: Path) -> None:
    start = 1_735_689_600_000  # 2025-01-01
    btc = synthetic_trades("BTCUSDT", start, 3000, seed=1)
    eth = synthetic_trades("ETHUSDT", start, 2000, seed=2, first_agg_id=500)
    write_archive(tmp_path, "BTCUSDT", "2025-01-01", btc, micros=True, zipped=True, checksum=True)
    write_archive(tmp_path, "ETHUSDT", "2025-01-01", eth)
    result = cli(["replay", "--source", str(tmp_path)], env_for(settings_for))  # a directory: all archives in it
    assert result.returncode == 0, result.stderr
    assert "published 5000, invalid 0" in result.stdout
    assert_exactly_once_in_order(trades_in(settings_for.kafka_bootstrap or "", settings_for.topic), btc + eth)
    heartbeats = [(p, k, json.loads(v)) for p, _, k, v in read_all(settings_for.kafka_bootstrap or "",
                                                                     settings_for.topic) if b'"heartbeat"' in v]
    # Each archive ends with its symbol's coverage, in that symbol's partition: the zip verified by its CHECKSUM,
    # its whole day; the .csv, only the times strictly inside its trades.
    partition = {k: p for p, _, k, v in read_all(settings_for.kafka_bootstrap or "", settings_for.topic)}
    assert sorted((k, v["s"], v["from"], v["T"]) for _, k, v in heartbeats) == [
        (b"BTCUSDT", "BTCUSDT", start, start + 86_400_000),
        (b"ETHUSDT", "ETHUSDT", eth[0].event_time_ms + 1, eth[-1].event_time_ms)]
    assert all(partition[k] == p for p, k, _ in heartbeats)


def test_a_replay_killed_mid_run_resumes_without_gap_or_duplicate(settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("SOLUSDT", 1_735_689_600_000, 20_000, seed=3, spacing_ms=10)
    archive = write_archive(tmp_path, "SOLUSDT", "2025-01-01", trades)
    env = env_for(settings_for)
    bootstrap = settings_for.kafka_bootstrap or ""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "replay", "--source", str(archive), "--speed", "20x"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _count(bootstrap, settings_for.topic) < 2000:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    published_before = len(trades_in(bootstrap, settings_for.topic))
    assert 0 < published_before < len(trades), "the kill should land mid-run"

    resumed = cli(["replay", "--source", str(archive)], env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"duplicates skipped {published_before}" in resumed.stdout
    assert "gaps 0" in resumed.stdout
    assert_exactly_once_in_order(trades_in(bootstrap, settings_for.topic), trades)


def _count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def test_sigterm_flushes_and_exits_cleanly(settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("BNBUSDT", 1_735_689_600_000, 5000, seed=4, spacing_ms=50)
    archive = write_archive(tmp_path, "BNBUSDT", "2025-01-01", trades)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "replay", "--source", str(archive), "--speed", "10x"],
                            env=env_for(settings_for), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bootstrap = settings_for.kafka_bootstrap or ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _count(bootstrap, settings_for.topic) < 100:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    published = trades_in(bootstrap, settings_for.topic)
    assert f"published {len(published)}," in out  # what it says it published is exactly what Kafka has
    assert published == trades[:len(published)]


def test_live_mode_against_a_cassette_backed_binance(settings_for: Settings, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in env_for(settings_for).items():
        if key.startswith("PIPELINE_"):
            monkeypatch.setenv(key, value)
    expected = [t for t in cassette_trades(CASSETTE) if invalid_reason(t) is None]
    live = ["-v", "produce", "--mode", "live", "--poll-interval", "0.01", "--start", "2026-01-01T12:00:00Z"]
    with cassettes.playback(CASSETTE), pytest.raises(cassettes.CannotOverwriteExistingCassetteException):
        main(live)  # runs until the recording ends
    bootstrap = settings_for.kafka_bootstrap or ""
    # On the real clock each symbol keeps its own pace, so the run ends when the first symbol's recording does:
    # every symbol published a gap-free, duplicate-free start of its recorded trades (many pages of them).
    published = trades_in(bootstrap, settings_for.topic)
    for symbol in {t.symbol for t in expected}:
        mine = [t for t in published if t.symbol == symbol]
        assert len(mine) > 100 and mine == [t for t in expected if t.symbol == symbol][:len(mine)], symbol
    expected = published

    # Restarted, it resumes after the last agg id in Kafka for each symbol: no repeat of anything. The first
    # thing it asks Binance is the newest agg id, to check the resume point (the recording has no such answer).
    capsys.readouterr()
    with cassettes.playback(CASSETTE), pytest.raises(cassettes.CannotOverwriteExistingCassetteException) as info:
        main(live)
    last_btc = max(t.agg_id for t in expected if t.symbol == "BTCUSDT")
    assert "limit=1" in str(info.value)
    assert f"BTCUSDT: resuming after agg id {last_btc}" in capsys.readouterr().err
    assert_exactly_once_in_order(trades_in(bootstrap, settings_for.topic), expected)


def test_unknown_symbol_in_live_mode_is_one_clear_line(settings_for: Settings, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cassette_builder import answer, write

    first = "/api/v3/aggTrades?symbol=NOPEUSDT&startTime=1767268800000&endTime=1767268859999&limit=1000"
    path = write(tmp_path / "c.yaml", [answer(first,
                                              400, {"code": -1121, "msg": "Invalid symbol."})])
    for key, value in env_for(dataclasses.replace(settings_for)).items():
        if key.startswith("PIPELINE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PIPELINE_SYMBOLS", "NOPEUSDT")
    with cassettes.playback(path):
        assert main(["produce", "--mode", "live", "--start", "1767268800000"]) == 2  # a configuration error
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Invalid symbol" in err and "NOPEUSDT" in err


@pytest.mark.parametrize(("args", "message"), [
    (["replay", "--source", "/nonexistent/BTCUSDT-aggTrades-2025-01-01.csv"], "no such file"),
    (["replay", "--source", "{archive}", "--speed", "warp"], "--speed"),
    (["replay", "--source", "{bad}"], "line 3"),
    (["replay", "--source", "{bad_zip}"], "unreadable archive"),
    # The name is a coverage claim: rows of another day, or a day not over yet, must not close windows.
    (["replay", "--source", "{archive}", "--source", "{misnamed}"], "outside the period the file name says"),
    (["replay", "--source", "{future}"], "has not ended"),
    (["replay", "--source", "{huge}"], "line 1: not a CSV row"),  # a 200 KiB field: csv's limit, not exit 70
])
def test_bad_input_is_one_clear_line_and_publishes_nothing(settings_for: Settings, tmp_path: Path,
                                                           args: list[str], message: str) -> None:
    good = synthetic_trades("ADAUSDT", 1_735_689_600_000, 10, seed=5)
    archive = write_archive(tmp_path, "ADAUSDT", "2025-01-01", good)
    bad = write_archive(tmp_path, "ADAUSDT", "2025-01-02", synthetic_trades("ADAUSDT", 1_735_776_000_000, 10, seed=5))
    misnamed = write_archive(tmp_path, "ADAUSDT", "2025-01-05", good)
    future = write_archive(tmp_path, "ADAUSDT", "2099-01-01", good)
    huge = write_archive(tmp_path, "ADAUSDT", "2025-01-06", [])
    huge.write_text('1,"' + "9" * 200_000 + '",1,1,1,1735689600000,true,true\n')
    lines = bad.read_text().splitlines()
    lines[2] = lines[2].replace(",", ";", 1)
    bad.write_text("\n".join(lines) + "\n")
    bad_zip = tmp_path / "ADAUSDT-aggTrades-2025-01-03.zip"
    bad_zip.write_bytes(b"PK\x03\x04 truncated")
    args = [a.format(archive=archive, bad=bad, bad_zip=bad_zip, misnamed=misnamed, future=future, huge=huge)
            for a in args]
    result = cli(args, env_for(settings_for))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert trades_in(settings_for.kafka_bootstrap or "", settings_for.topic) == []


def test_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    archive = write_archive(tmp_path, "ADAUSDT", "2025-01-01", synthetic_trades("ADAUSDT", 1_735_689_600_000, 5, 6))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PIPELINE_KAFKA_BOOTSTRAP="127.0.0.1:1", PIPELINE_STATE_DIR=str(tmp_path))
    result = cli(["replay", "--source", str(archive)], env, timeout=120)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "Kafka at 127.0.0.1:1 is unreachable" in result.stderr


def test_an_older_archive_replayed_after_a_newer_one_is_still_published(settings_for: Settings,
                                                                        tmp_path: Path) -> None:
    day1 = synthetic_trades("XRPETH", 1_735_689_600_000, 300, seed=8, first_agg_id=1_000)
    day2 = synthetic_trades("XRPETH", 1_735_776_000_000, 300, seed=9, first_agg_id=1_300)
    newer = write_archive(tmp_path, "XRPETH", "2025-01-02", day2)
    older = write_archive(tmp_path, "XRPETH", "2025-01-01", day1)
    env = env_for(settings_for)
    assert "published 300," in cli(["replay", "--source", str(newer)], env).stdout
    second = cli(["replay", "--source", str(older)], env)
    assert "published 300, invalid 0, rejected 0, duplicates skipped 0" in second.stdout, second.stdout
    third = cli(["replay", "--source", str(older), "--source", str(newer)], env)
    assert "published 0, invalid 0, rejected 0, duplicates skipped 600" in third.stdout, third.stdout
    published = trades_in(settings_for.kafka_bootstrap or "", settings_for.topic)
    assert sorted(published, key=lambda t: t.agg_id) == day1 + day2


def test_published_ranges_are_exact_over_gaps_repeats_and_disorder(settings_for: Settings) -> None:
    """What a replay skips as already published: exact ranges, kept as runs while the topic is read (not a list of
    every id: issue 13), whatever gaps, repeats and out-of-order ids the topic holds."""
    from pipeline.adapters import kafka_io

    bootstrap = settings_for.kafka_bootstrap or ""
    base = synthetic_trades("BTCUSDT", 1_735_689_600_000, 30, seed=3, first_agg_id=1)
    other = synthetic_trades("ETHUSDT", 1_735_689_600_000, 5, seed=4, first_agg_id=500)
    by_id = {t.agg_id: t for t in base}
    order = [1, 2, 3, 4, 5, 3, 8, 9, 20, 6, 21, 22, 30]  # a repeat, a gap, one id late (6), another gap
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    for n, agg_id in enumerate(order):
        sink.send_trade(by_id[agg_id])
        if n < len(other):
            sink.send_trade(other[n])
    sink.flush()
    sink.close()
    assert kafka_io.published_ranges(bootstrap, settings_for.topic, ["BTCUSDT", "SOLUSDT"]) == {
        "BTCUSDT": [(1, 6), (8, 9), (20, 22), (30, 30)]}
