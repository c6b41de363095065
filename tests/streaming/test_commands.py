"""The README's commands as a user runs them: demo (own stack), report, record, spark-submit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from pipeline.adapters.mysql import connection, reads
from pipeline.compose import connector_jars as cached_connector_jars
from pipeline.settings import MysqlUrl, Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.cli_helpers import ok as cli
from tests.reference_rows import assert_rows_match

ROOT = Path(__file__).resolve().parents[2]
FIVE = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT"}


def test_demo_shows_exactly_its_own_rows_leaves_other_services_alone_and_stops_on_ctrl_c(
        tmp_path: Path, settings_for: Settings) -> None:
    """A fresh state dir (its own local stack), with the environment pointing at other services, as a production
    shell would: the demo writes none of that, shows exactly the recording's rows, starts from nothing on a
    second run whatever the first left, and Ctrl-C stops what it started and exits 0."""
    from tests.integration.test_ingestion import CASSETTE, cassette_trades
    from tests.kafka_helpers import read_all

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PIPELINE_STATE_DIR=str(tmp_path / "state"), PIPELINE_STACK_BACKEND="processes")
    elsewhere = env_for(settings_for, PIPELINE_STATE_DIR=str(tmp_path / "state"), PIPELINE_STACK_BACKEND="processes")
    other = settings_for.mysql_url
    assert other is not None
    try:
        for run_no in (1, 2):
            out = tmp_path / f"out{run_no}"
            demo = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--speed", "60x", "--out-dir", str(out)],
                                  env=elsewhere, capture_output=True, text=True, timeout=900, cwd=tmp_path)
            assert demo.returncode == 0, demo.stderr[-3000:]
            for step in ("1/4", "2/4", "3/4", "4/4", "done", "first live rows after"):
                assert step in demo.stderr
            assert "uses the local stack" in demo.stderr and "pipeline stack down" in demo.stdout
            png, page = out / "moving_averages.png", out / "moving_averages.html"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
            assert "data:image/png;base64," in page.read_text()
            assert all(symbol in page.read_text() for symbol in FIVE)

            stack_env = subprocess.run([sys.executable, "-m", "pipeline", "stack", "env"], env=env,
                                       capture_output=True, text=True, check=True).stdout
            admin = MysqlUrl.parse(stack_env.split("PIPELINE_MYSQL_ADMIN_URL=")[1].split()[0].strip("'"))
            demo_db = admin.with_database("pipeline_demo")
            assert_rows_match(demo_db, cassette_trades(CASSETTE))  # every row exact and final, nothing else
            if run_no == 1:  # what a first run (or anything else) leaves behind must not show in the next
                with connection.transaction(demo_db) as cur:
                    cur.execute("INSERT INTO moving_averages (symbol, start_time, end_time, average_price, "
                                "open_price, high_price, low_price, close_price, volume, quote_volume, vwap, "
                                "trade_count, agg_trade_count, is_final, updated_at) VALUES ('BTCUSDT', "
                                "'2025-06-01 00:00:00', '2025-06-01 00:01:00', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
                                "NOW())")
        # The services the environment named saw nothing.
        assert reads.read_windows(other) == []
        assert read_all(settings_for.kafka_bootstrap or "", settings_for.topic) == []

        # Ctrl-C while minutes form: everything it started stops, exit 0.
        errors = tmp_path / "demo3.err"
        with open(errors, "w") as err:
            demo = subprocess.Popen([sys.executable, "-m", "pipeline", "demo", "--speed", "2x", "--out-dir",
                                     str(tmp_path / "out3")], env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    text=True, cwd=tmp_path)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and demo.poll() is None and (
                "2/4" not in errors.read_text() or not reads.read_windows(demo_db)):
            time.sleep(0.5)  # its database was emptied and the job has written the first live rows
        assert demo.poll() is None and reads.read_windows(demo_db), errors.read_text()[-3000:]
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=120)
        stderr = errors.read_text()
        assert demo.returncode == 0, stderr[-3000:]
        assert "interrupted" in stderr and "stopped" in stderr
        assert not _processes("pipeline process --trigger-seconds 0.5"), "the demo's Spark job outlived it"
    finally:
        down = subprocess.run([sys.executable, "-m", "pipeline", "stack", "down"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert down.returncode == 0


def _processes(command: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", command], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def test_report_after_the_demo_selects_a_symbol(settings_for: Settings) -> None:
    from tests.integration.test_ingestion import CASSETTE

    cli(settings_for, "replay", "--source", str(CASSETTE))
    cli(settings_for, "process", "--until-idle")
    env = env_for(settings_for)
    out = Path(str(settings_for.checkpoint_dir)).parent / "report"
    report = subprocess.run([sys.executable, "-m", "pipeline", "report", "--symbol", "BTCUSDT", "--minutes", "10",
                             "--out-dir", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    table = [line for line in report.stdout.splitlines() if line.startswith("BTCUSDT")]
    assert len(table) == 3  # the table shows each symbol's latest three of the ten selected
    assert not [line for line in report.stdout.splitlines() if line.startswith("ETHUSDT")]
    assert (out / "moving_averages.png").exists()


def test_record_writes_a_cassette_that_replays(settings_for: Settings, tmp_path: Path) -> None:
    from fixtures import generate

    exchange = generate.Exchange(generate.simulate(__import__("random").Random(1)))
    server = generate.serve(exchange)
    stop = threading.Event()

    def clock() -> None:  # the simulated market runs 60x faster than the wall clock
        started = time.monotonic()
        while not stop.is_set():
            with exchange.lock:
                exchange.now_ms = generate.START_MS + int((time.monotonic() - started) * 60_000)
            time.sleep(0.02)

    ticker = threading.Thread(target=clock, daemon=True)
    ticker.start()
    out = tmp_path / "recorded.yaml"
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = env_for(settings_for, PIPELINE_SYMBOLS="BTCUSDT,ETHUSDT")
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline", "record", "--out", str(out), "--minutes", "0.1",
                                 "--base-url", base], env=env, capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        server.shutdown()
    assert result.returncode == 0, result.stderr
    cassette = yaml.safe_load(out.read_text())
    uris = [i["request"]["uri"] for i in cassette["interactions"]]
    assert len(uris) >= 4 and all(u.startswith(base) for u in uris)
    assert {u.split("symbol=")[1].split("&")[0] for u in uris} == {"BTCUSDT", "ETHUSDT"}
    assert all(i["response"]["status"]["code"] == 200 for i in cassette["interactions"])
    # Point the recording at Binance's host (as fixtures/generate.py does) and replay it through the real client.
    out.write_text(out.read_text().replace(base, "https://api.binance.com"))
    replayed = cli(settings_for, "replay", "--source", str(out))
    assert "published " in replayed.stdout and "rejected 0" in replayed.stdout


def test_a_recording_holds_the_klines_that_prove_its_replay(settings_for: Settings, tmp_path: Path) -> None:
    """`pipeline record` against a simulated Binance running on the wall clock, for over a minute: the cassette
    also holds the exchange's klines of every minute it recorded complete, and `reconcile --cassette` proves the
    replay's windows with them, with no network."""
    from tests.sim_binance import MARKETS, SimBinance

    symbols = ("SOLUSDT", "ADAUSDT")
    now_ms = int(time.time() * 1000)
    sim = SimBinance([MARKETS[s] for s in symbols], seed=51, history_start_ms=now_ms - 120_000)
    base = sim.start()
    out = tmp_path / "recorded.yaml"
    env = env_for(settings_for, PIPELINE_SYMBOLS=",".join(symbols), PIPELINE_WATERMARK_SECONDS="2")
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline", "record", "--out", str(out), "--minutes", "1.2",
                                 "--base-url", base], env=env, capture_output=True, text=True, timeout=300)
    finally:
        sim.stop()
    assert result.returncode == 0, result.stderr
    uris = [i["request"]["uri"] for i in yaml.safe_load(out.read_text())["interactions"]]
    assert {u.split("symbol=")[1].split("&")[0] for u in uris if "/api/v3/klines" in u} == set(symbols), uris
    out.write_text(out.read_text().replace(base, "https://api.binance.com"))
    cli(settings_for, "replay", "--source", str(out))
    cli(settings_for, "process", "--until-idle")
    for symbol in symbols:
        proof = cli(settings_for, "reconcile", "--symbol", symbol, "--cassette", str(out))
        assert "OK: every final minute matches" in proof.stdout and " 0 mismatch" in proof.stdout, proof.stdout
        assert " 0 match," not in proof.stdout, proof.stdout  # at least one minute compared


def test_spark_submit_runs_the_job(settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("BNBUSDT", 1_735_689_600_000, 500, seed=31, spacing_ms=2_000)
    cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "BNBUSDT", "2025-01-01", trades, zipped=True,
                                                              checksum=True)))
    spark_submit = Path(sys.executable).parent / "spark-submit"
    jars = ",".join(str(j) for j in cached_connector_jars(settings_for.cache_dir))
    env = env_for(settings_for, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    result = subprocess.run([str(spark_submit), "--master", "local[2]", "--jars", jars,
                             str(ROOT / "pipeline" / "submit.py"), "--until-idle"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert settings_for.mysql_url is not None
    assert_rows_match(settings_for.mysql_url, trades)


def test_report_shows_the_newest_stretch_unless_asked_for_a_range(settings_for: Settings, tmp_path: Path) -> None:
    """Two stretches in one database (Jan 1 and Jan 3, 2025): the default shows only the newer; a range shows
    both, each panel's lines broken at the gap."""
    day1 = [t for t in synthetic_trades("SOLUSDT", 1_735_732_800_000, 300, seed=5, spacing_ms=2_000)
            if t.event_time_ms < 1_735_776_000_000]  # 2025-01-01 12:00 on
    day3 = synthetic_trades("SOLUSDT", 1_735_905_600_000, 300, seed=6, first_agg_id=10_000,
                            spacing_ms=2_000)  # 2025-01-03 12:00 on
    cli(settings_for, "replay",
        "--source", str(write_archive(tmp_path, "SOLUSDT", "2025-01-01", day1, zipped=True, checksum=True)),
        "--source", str(write_archive(tmp_path, "SOLUSDT", "2025-01-03", day3, zipped=True, checksum=True)))
    cli(settings_for, "process", "--until-idle")
    env = env_for(settings_for)

    def report(*args: str) -> tuple[str, str]:
        out = tmp_path / f"report{len(args)}"
        result = subprocess.run([sys.executable, "-m", "pipeline", "report", "--out-dir", str(out), *args], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert (out / "moving_averages.png").read_bytes()[:4] == b"\x89PNG"
        return result.stdout, (out / "moving_averages.html").read_text()

    table, page = report()
    assert "2025-01-03" in table and "2025-01-01" not in table
    assert "SOLUSDT 2025-01-03" in page and "SOLUSDT 2025-01-01" not in page
    table, page = report("--since", "2025-01-01T00:00", "--until", "2025-01-04")
    assert "SOLUSDT 2025-01-01 12:00 UTC (final)" in page and "SOLUSDT 2025-01-03 12:00 UTC (final)" in page
    minutes = {(r.event_time_ms // 60_000) for r in day1 + day3}
    runs, previous = 0, None
    for minute in sorted(minutes):
        runs += previous is None or minute != previous + 1
        previous = minute
    assert page.count("<polyline") == 2 * runs  # average and VWAP, one line per run of minutes, none across a gap
    failed = subprocess.run([sys.executable, "-m", "pipeline", "report", "--since", "yesterday"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "--since must be an ISO time" in failed.stderr
