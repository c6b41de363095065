"""The whole pipeline: fixtures -> Kafka -> Spark -> MySQL, compared with the reference aggregator row by row."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from kafka import KafkaProducer

from pipeline.adapters import kafka_io
from pipeline.adapters.mysql import connection, reads
from pipeline.core import messages
from pipeline.core.trades import Trade
from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for, run
from tests.cli_helpers import ok as cli
from tests.hostile import hostile_copies
from tests.integration.test_ingestion import CASSETTE, cassette_trades
from tests.kafka_helpers import read_all
from tests.reference_rows import assert_rows_match, expected_rows


def test_bundled_fixtures_give_exactly_the_reference_rows(settings_for: Settings) -> None:
    cli(settings_for, "replay", "--source", str(CASSETTE))
    result = cli(settings_for, "process", "--until-idle")
    assert settings_for.mysql_url is not None
    trades = cassette_trades(CASSETTE)
    assert_rows_match(settings_for.mysql_url, trades)
    assert "0 quarantined" in result.stdout and "0 late trades" in result.stdout
    symbols = {r.symbol for r in reads.read_windows(settings_for.mysql_url)}
    assert symbols == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT"}

    again = cli(settings_for, "process", "--until-idle")  # nothing new: nothing changes
    assert "0 window rows written" in again.stdout and "0 trades counted" in again.stdout
    assert_rows_match(settings_for.mysql_url, trades)


def test_archives_over_several_days_in_ms_and_us(settings_for: Settings, tmp_path: Path) -> None:
    day1 = synthetic_trades("XRPETH", 1_735_689_600_000, 4000, seed=11, spacing_ms=20_000)  # spills into day 2
    day1, day2 = ([t for t in day1 if t.event_time_ms < 1_735_776_000_000],
                  [t for t in day1 if t.event_time_ms >= 1_735_776_000_000])
    sol = synthetic_trades("SOLUSDT", 1_735_689_600_000, 3000, seed=12, spacing_ms=5_000)
    sources = [write_archive(tmp_path, "XRPETH", "2025-01-01", day1, micros=True, zipped=True, checksum=True),
               write_archive(tmp_path, "XRPETH", "2025-01-02", day2, zipped=True, checksum=True),
               write_archive(tmp_path, "SOLUSDT", "2025-01-01", sol, zipped=True, checksum=True)]
    cli(settings_for, "replay", *[a for s in sources for a in ("--source", str(s))])
    cli(settings_for, "process", "--until-idle")
    assert settings_for.mysql_url is not None
    assert_rows_match(settings_for.mysql_url, day1 + day2 + sol)


def test_redelivered_messages_change_nothing(settings_for: Settings) -> None:
    cli(settings_for, "replay", "--source", str(CASSETTE))
    bootstrap = settings_for.kafka_bootstrap or ""
    original = [(k, v) for _, _, k, v in sorted(read_all(bootstrap, settings_for.topic))]
    # A second topic where every message arrives twice: once at once, once a few hundred messages later.
    doubled = []
    for i, message in enumerate(original):
        doubled.append(message)
        if i >= 300:
            doubled.append(original[i - 300])
    doubled.extend(original[-300:])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    topic = settings_for.topic + ".doubled"
    kafka_io.ensure_topic(bootstrap, topic)
    for key, value in doubled:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    import dataclasses

    doubled_settings = dataclasses.replace(settings_for, topic=topic)
    cli(doubled_settings, "process", "--until-idle")
    assert settings_for.mysql_url is not None
    assert_rows_match(settings_for.mysql_url, cassette_trades(CASSETTE))


def test_malformed_messages_go_to_quarantine_and_the_job_goes_on(settings_for: Settings) -> None:
    bootstrap = settings_for.kafka_bootstrap or ""
    trades = synthetic_trades("ETHUSDT", 1_767_268_800_000, 300, seed=21, spacing_ms=1_000)
    good = [messages.encode_trade(t) for t in trades]
    invalid = Trade("ETHUSDT", 10_000, trades[0].price * 0, trades[0].quantity * 0, -1, -1,
                    trades[5].event_time_ms, False, True)
    bad = [
        (b"ETHUSDT", b"not json at all"),
        (b"ETHUSDT", b'{"v": 99, "type": "trade"}'),
        (b"ETHUSDT", json.dumps({"v": 1, "type": "trade", "s": "ETHUSDT", "a": 1}).encode()),
        (b"ETHUSDT", json.dumps({"v": 1, "type": "trade", "s": "ETHUSDT", "a": 20_000, "p": "1.000000001",
                                 "q": "1", "f": 1, "l": 1, "T": trades[3].event_time_ms, "m": True}).encode()),
        messages.encode_trade(invalid),
        (b"ETHUSDT", b"\xff\xfe\x00 binary"),
    ]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    for i, (key, value) in enumerate(good):
        producer.send(settings_for.topic, key=key, value=value)
        if i % 50 == 10 and bad:
            k, v = bad.pop()
            producer.send(settings_for.topic, key=k, value=v)
    producer.flush()
    producer.close()
    sent_at = datetime.now(UTC).replace(tzinfo=None)
    # A driver whose local time is not UTC must still keep Kafka's timestamps in UTC.
    result = run(["process", "--until-idle"], env_for(settings_for, TZ="America/New_York"))
    assert result.returncode == 0, result.stderr[-3000:]
    url = settings_for.mysql_url
    assert url is not None
    with connection.transaction(url) as cur:
        cur.execute("SELECT reason, kafka_timestamp FROM quarantine ORDER BY kafka_offset")
        kept = cur.fetchall()
    reasons = [r[0] for r in kept]
    assert all(abs((stamp - sent_at).total_seconds()) < 120 for _, stamp in kept), kept
    assert sorted(reasons) == sorted([
        "not a JSON object with fields of the schema's types", "unsupported schema version",
        "price is not a decimal with at most 8 places", "invalid record: trade ids are -1",
        messages.TEXT_REFUSED_REASON, "price is not a decimal with at most 8 places",  # the bytes not UTF-8
    ]), reasons
    # No heartbeat was sent: nobody said a minute is complete, so none is final.
    rows = reads.read_windows(url)
    assert rows and not any(r.is_final for r in rows)
    assert_rows_match(url, trades, all_final=False)

    # A heartbeat for another symbol closes nothing of this one; this symbol's own closes every covered minute.
    newest = max(t.event_time_ms for t in trades)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    sink.send_heartbeat(messages.Heartbeat("BTCUSDT", 0, newest + 60_000))
    sink.flush()
    cli(settings_for, "process", "--until-idle")
    assert not any(r.is_final for r in reads.read_windows(url))
    sink.send_heartbeat(messages.Heartbeat("ETHUSDT", trades[0].event_time_ms - 60_000, newest + 60_000))
    sink.flush()
    sink.close()
    cli(settings_for, "process", "--until-idle")
    assert_rows_match(url, trades, all_final=True)


def test_sigkill_mid_stream_and_restart_gives_identical_rows(settings_for: Settings) -> None:
    url = settings_for.mysql_url
    assert url is not None
    processor = subprocess.Popen([sys.executable, "-m", "pipeline", "process", "--trigger-seconds", "0.5"],
                                 env=env_for(settings_for), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert settings_for.checkpoint_dir is not None
    started = settings_for.checkpoint_dir / "stream" / "metadata"  # written once the query has started
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not started.exists() and processor.poll() is None:
            time.sleep(0.2)
        assert started.exists(), "the processor never started its query"
        # The replay starts only now, so a slow JVM start (CI) cannot let it finish before the kill.
        replay = subprocess.Popen([sys.executable, "-m", "pipeline", "replay", "--source", str(CASSETTE),
                                   "--speed", "30x"], env=env_for(settings_for), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _applied_batches(url) < 3:
            time.sleep(0.2)
        assert _applied_batches(url) >= 3, "the processor never got going"
        mid_way = replay.poll() is None  # at 30x the 21 recorded minutes take about 40 s
        processor.send_signal(signal.SIGKILL)
        processor.wait(timeout=30)
        assert mid_way, "the replay ended before the kill: the test would not kill mid-stream"
        assert replay.wait(timeout=300) == 0
    finally:
        if processor.poll() is None:
            processor.kill()
    partial = reads.read_windows(url)
    assert partial and not all(r.is_final for r in partial), "the kill should land mid-stream"
    cli(settings_for, "process", "--until-idle")
    assert_rows_match(url, cassette_trades(CASSETTE))


def _applied_batches(url: object) -> int:
    try:
        with connection.transaction(url) as cur:  # type: ignore[arg-type]
            cur.execute("SELECT COUNT(*) FROM pipeline_batches WHERE query_name = 'stream' AND rows_written > 0")
            return int(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return 0


def test_a_batch_re_executed_after_a_crash_changes_nothing(settings_for: Settings, tmp_path: Path) -> None:
    """Spark re-runs a batch whose offsets were logged but whose commit was not (a crash between the two). The
    crash is made exact here by deleting the last commit marker after a clean run. On pyspark
    4.1.1 this is also the path that hits SPARK-55271, which the job survives by restarting the query."""
    trades = synthetic_trades("ADAUSDT", 1_735_689_600_000, 2_000, seed=41, spacing_ms=1_000)
    cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "ADAUSDT", "2025-01-01", trades, zipped=True,
                                                              checksum=True)))
    cli(settings_for, "process", "--until-idle")
    url = settings_for.mysql_url
    assert url is not None and settings_for.checkpoint_dir is not None
    before = reads.read_windows(url)
    commits = sorted((settings_for.checkpoint_dir / "stream" / "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    commits[-1].unlink()
    (commits[-1].parent / f".{commits[-1].name}.crc").unlink(missing_ok=True)  # Hadoop's checksum beside it
    again = cli(settings_for, "process", "--until-idle")
    assert "1 re-executed batches skipped" in again.stdout, again.stdout
    after = reads.read_windows(url)
    assert [dataclasses.replace(r, updated_at=before[0].updated_at) for r in after] == \
        [dataclasses.replace(r, updated_at=before[0].updated_at) for r in before]
    assert [r.updated_at for r in after] == [r.updated_at for r in before]  # not even rewritten
    assert_rows_match(url, trades)


def test_producers_on_one_topic_neither_close_nor_drop_each_others_windows(settings_for: Settings,
                                                                             tmp_path: Path) -> None:
    """One producer's coverage of a later day must not make another's earlier trades late, nor close the windows
    of a symbol it does not cover. (One watermark per query dropped all of the second replay here.)"""
    url = settings_for.mysql_url
    assert url is not None
    day1, day2 = 1_735_689_600_000, 1_735_776_000_000
    btc = synthetic_trades("BTCUSDT", day2, 1500, seed=51, spacing_ms=3_000)
    eth = synthetic_trades("ETHUSDT", day1, 1500, seed=52, spacing_ms=3_000)
    sol = synthetic_trades("SOLUSDT", day1 + 600_000, 200, seed=53, spacing_ms=2_000)
    cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "BTCUSDT", "2025-01-02", btc, zipped=True,
                                                              checksum=True)))
    cli(settings_for, "process", "--until-idle")
    # A second producer, a day behind in event time, after the first one's data was processed.
    cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "ETHUSDT", "2025-01-01", eth, zipped=True,
                                                              checksum=True)))
    # A third publishes SOLUSDT trades and (yet) no coverage for them.
    bootstrap = settings_for.kafka_bootstrap or ""
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    for t in sol:
        sink.send_trade(t)
    sink.flush()
    result = cli(settings_for, "process", "--until-idle")
    assert "0 late trades" in result.stdout, result.stdout
    assert_rows_match(url, btc + eth + sol, all_final=False)
    rows = reads.read_windows(url)
    assert all(r.is_final for r in rows if r.symbol != "SOLUSDT")
    assert not any(r.is_final for r in rows if r.symbol == "SOLUSDT")  # nobody covered them
    sink.send_heartbeat(messages.Heartbeat("SOLUSDT", day1, day1 + 86_400_000))
    sink.flush()
    sink.close()
    cli(settings_for, "process", "--until-idle")
    assert_rows_match(url, btc + eth + sol)  # all exact and final now


def test_a_trade_behind_the_heartbeat_that_covers_it_is_late_in_any_batch(settings_for: Settings) -> None:
    """Same topic content, same result, whether Spark reads it in one batch or two: the trade published after its
    minute was declared complete is late, counted and kept, and the row holds only the trades before it."""
    url = settings_for.mysql_url
    assert url is not None
    bootstrap = settings_for.kafka_bootstrap or ""
    minute = 1_767_268_800_000
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    published = []
    for symbol, split in (("SOLUSDT", False), ("ADAUSDT", True)):
        trades = synthetic_trades(symbol, minute, 30, seed=61, spacing_ms=500)  # all inside the minute
        straggler = Trade(symbol, trades[-1].agg_id + 1, Decimal("999"), Decimal("1"), 10**9, 10**9,
                          minute + 45_000, False, True)
        for t in trades:
            sink.send_trade(t)
        sink.send_heartbeat(messages.Heartbeat(symbol, minute, minute + 60_000))
        sink.flush()
        if split:  # the job reads up to the heartbeat, then the straggler in a later batch
            cli(settings_for, "process", "--until-idle")
        sink.send_trade(straggler)
        sink.flush()
        published += trades
    sink.close()
    result = cli(settings_for, "process", "--until-idle")
    assert "since the checkpoint began: 60 trades counted, 2 late" in result.stdout, result.stdout
    assert_rows_match(url, published)
    assert [r.late_trade_count for r in reads.read_windows(url)] == [1, 1]
    with connection.transaction(url) as cur:
        cur.execute("SELECT reason, raw_value FROM quarantine ORDER BY reason")
        kept = cur.fetchall()
    assert [r[0][:34] for r in kept] == ["late: window ADAUSDT 2026-01-01 12", "late: window SOLUSDT 2026-01-01 12"]
    assert all('"p":"999"' in raw for _, raw in kept)


def test_a_new_checkpoint_over_kept_rows_applies_new_batches_and_counts_nothing_twice(settings_for: Settings) -> None:
    """Deleting the checkpoint (or restoring an old copy, or one on hdfs://) starts Spark's batch ids again for
    other offsets. Keyed by (run id, batch id), the ledger took the new batch 0 (the whole topic, new data
    included) for the old batch 0 and skipped it: the new minutes never reached MySQL. Known by what it read, the
    new batch is applied; and what the old batches counted (trades, a late trade, a malformed message) is not
    counted again."""
    url, checkpoint = settings_for.mysql_url, settings_for.checkpoint_dir
    assert url is not None and checkpoint is not None
    bootstrap = settings_for.kafka_bootstrap or ""
    start = 1_767_268_800_000
    trades = synthetic_trades("ADAUSDT", start, 1_200, seed=71, spacing_ms=1_000)  # 20 minutes
    withheld = trades[100]  # published after the heartbeat that covers its minute: late
    early = [t for t in trades[:600] if t is not withheld]
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    for t in early:
        sink.send_trade(t)
    sink.send_heartbeat(messages.Heartbeat("ADAUSDT", start, start + 5 * 60_000))
    sink.send_trade(withheld)
    sink.flush()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(settings_for.topic, key=b"ADAUSDT", value=b'{"v":1,"type":"trade","s":"ADAUSDT"}')
    producer.flush()
    first = cli(settings_for, "process", "--until-idle")
    assert "599 trades counted" in first.stdout and "1 late trades" in first.stdout, first.stdout

    import shutil

    shutil.rmtree(checkpoint / "stream")  # what remains beside it (if anything) must not matter
    later = trades[600:]
    for t in later:
        sink.send_trade(t)
    sink.send_heartbeat(messages.Heartbeat("ADAUSDT", start, start + 60 * 60_000))
    sink.flush()
    sink.close()
    second = cli(settings_for, "process", "--until-idle")
    assert "600 trades counted" in second.stdout and "0 late trades" in second.stdout, second.stdout
    assert "0 quarantined" in second.stdout, second.stdout
    assert_rows_match(url, early + later)
    assert sum(r.late_trade_count for r in reads.read_windows(url)) == 1
    with connection.transaction(url) as cur:
        cur.execute("SELECT SUM(trades_merged), SUM(late_trades), SUM(quarantined) FROM pipeline_batches")
        assert tuple(int(v) for v in cur.fetchone()) == (1_199, 1, 2)
        cur.execute("SELECT COUNT(*) FROM quarantine")
        assert cur.fetchone()[0] == 2


def test_messages_from_the_future_are_quarantined_not_obeyed(settings_for: Settings) -> None:
    """A producer cannot know trades that have not happened: a heartbeat whose T lies after its own publish time
    (plus 5 minutes of clock skew) is refused. Obeyed, this one (T in 2099) finalized every window of the symbol
    at once and made every later trade late. A trade stamped 2099 is refused the same way (it opened a 2099 row)."""
    url = settings_for.mysql_url
    assert url is not None
    bootstrap = settings_for.kafka_bootstrap or ""
    start = 1_767_268_800_000
    trades = synthetic_trades("SOLUSDT", start, 400, seed=81, spacing_ms=500)
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    for t in trades[:200]:
        sink.send_trade(t)
    sink.send_heartbeat(messages.Heartbeat("SOLUSDT", start, 4_070_908_800_000))  # 2099-01-01
    sink.send_trade(dataclasses.replace(trades[0], agg_id=10**9, event_time_ms=4_070_908_800_000))
    sink.flush()
    cli(settings_for, "process", "--until-idle")
    for t in trades[200:]:
        sink.send_trade(t)
    sink.send_heartbeat(messages.Heartbeat("SOLUSDT", start, start + 60 * 60_000))
    sink.flush()
    sink.close()
    result = cli(settings_for, "process", "--until-idle")
    assert "0 late trades" in result.stdout, result.stdout
    assert_rows_match(url, trades)
    with connection.transaction(url) as cur:
        cur.execute("SELECT reason FROM quarantine ORDER BY kafka_offset")
        assert [r[0] for r in cur.fetchall()] == [
            "heartbeat declares complete a time after it was published (beyond 5 minutes of clock skew)",
            "trade time after the message was published (beyond 5 minutes of clock skew)"]


def test_hostile_messages_into_a_running_job_are_quarantined_and_every_window_stays_exact(
        settings_for: Settings, tmp_path: Path) -> None:
    """Issue 10's scenario as it was measured: the job runs, a replay feeds it, and eleven broken copies of a real
    message are written into the topic mid-stream. Before, the job died on ``long overflow``, every restart exited
    3 and 15 of 39 windows were written. Now the job must stay up, quarantine all eleven with a reason, finish every
    window exactly, and a producer started afterwards (whose resume scan reads them) must start and exit 0."""
    url = settings_for.mysql_url
    bootstrap = settings_for.kafka_bootstrap or ""
    assert url is not None and settings_for.checkpoint_dir is not None
    trades = cassette_trades(CASSETTE)
    hostile = hostile_copies(next(t for t in trades if t.symbol == "BTCUSDT"))
    job_log, replay_log = tmp_path / "process.log", tmp_path / "replay.log"  # files: a full pipe would block them
    processor = subprocess.Popen([sys.executable, "-m", "pipeline", "process", "--trigger-seconds", "0.5"],
                                 env=env_for(settings_for), stdout=job_log.open("wb"), stderr=subprocess.STDOUT)
    replay: subprocess.Popen[bytes] | None = None
    try:
        started = settings_for.checkpoint_dir / "stream" / "metadata"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not started.exists() and processor.poll() is None:
            time.sleep(0.2)
        assert started.exists(), "the processor never started its query"
        replay = subprocess.Popen([sys.executable, "-m", "pipeline", "replay", "--source", str(CASSETTE),
                                   "--speed", "30x"], env=env_for(settings_for), stdout=replay_log.open("wb"),
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _applied_batches(url) < 2:
            time.sleep(0.2)
        assert replay.poll() is None, "the replay ended before the hostile messages: they would not land mid-stream"
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for raw in hostile:
            producer.send(settings_for.topic, key=b"BTCUSDT", value=raw)
        producer.flush()
        producer.close()
        assert replay.wait(timeout=300) == 0, replay_log.read_text(errors="replace")[-3000:]
        wanted = set(expected_rows(trades))
        deadline = time.monotonic() + 300
        while True:
            assert processor.poll() is None, job_log.read_text(errors="replace")[-3000:]
            got = {(r.symbol, r.start_time): r.is_final for r in reads.read_windows(url)}
            if wanted <= set(got) and all(got[k] for k in wanted):
                break
            assert time.monotonic() < deadline, f"not every window final after 300 s:\n{job_log.read_text()[-3000:]}"
            time.sleep(0.5)
        # A producer starting now reads the hostile messages in its resume scan: it must start, publish nothing new.
        again = cli(settings_for, "replay", "--source", str(CASSETTE))
        assert "published 0," in again.stdout, again.stdout
        time.sleep(3)
        assert processor.poll() is None, f"the job stopped on data:\n{job_log.read_text(errors='replace')[-3000:]}"
        processor.send_signal(signal.SIGTERM)
        assert processor.wait(timeout=120) == 0
    finally:
        for proc in (processor, replay):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert_rows_match(url, trades)
    with connection.transaction(url) as cur:
        cur.execute("SELECT reason, raw_value FROM quarantine ORDER BY kafka_offset")
        kept = cur.fetchall()
    assert len(kept) == len(hostile), kept
    assert all(reason for reason, _ in kept), kept
    assert sorted(raw for _, raw in kept) == sorted(r.decode("utf-8", "replace") for r in hostile), kept
