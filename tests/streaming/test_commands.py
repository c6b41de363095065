"""The README's commands as a user runs them: demo (own stack), report, record, spark-submit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from pipeline.adapters import mysql_store
from pipeline.settings import MysqlUrl, Settings
from pipeline.spark.session import connector_jars as cached_connector_jars
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.cli_helpers import ok as cli
from tests.reference_rows import assert_rows_match

ROOT = Path(__file__).resolve().parents[2]
FIVE = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT"}


def test_demo_on_a_fresh_state_dir_then_report_then_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PIPELINE_STATE_DIR=str(tmp_path / "state"), PIPELINE_STACK_BACKEND="processes")
    try:
        demo = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out-dir", str(tmp_path / "out")],
                              env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert demo.returncode == 0, demo.stderr[-3000:]
        for step in ("1/4", "2/4", "3/4", "4/4", "done"):
            assert step in demo.stderr
        assert "pipeline stack down" in demo.stdout
        png, page = tmp_path / "out" / "moving_averages.png", tmp_path / "out" / "moving_averages.html"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
        assert "data:image/png;base64," in page.read_text() and "BTCUSDT" in page.read_text()

        url = MysqlUrl.parse(subprocess.run([sys.executable, "-m", "pipeline", "stack", "env"], env=env,
                                            capture_output=True, text=True, check=True).stdout
                             .split("PIPELINE_MYSQL_URL=")[1].split()[0].strip("'"))
        rows = mysql_store.read_windows(url)
        assert {r["symbol"] for r in rows} == FIVE
        assert all(r["is_final"] for r in rows)

        report = subprocess.run([sys.executable, "-m", "pipeline", "report", "--symbol", "BTCUSDT", "--minutes", "10",
                                 "--out-dir", str(tmp_path / "report")], env=env, capture_output=True, text=True,
                                timeout=120)
        assert report.returncode == 0, report.stderr
        table = [line for line in report.stdout.splitlines() if line.startswith("BTCUSDT")]
        assert len(table) == 3  # the table shows each symbol's latest three of the ten selected
        assert not [line for line in report.stdout.splitlines() if line.startswith("ETHUSDT")]
        assert (tmp_path / "report" / "moving_averages.png").exists()
    finally:
        down = subprocess.run([sys.executable, "-m", "pipeline", "stack", "down"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert down.returncode == 0


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


def test_spark_submit_runs_the_job(settings_for: Settings, tmp_path: Path) -> None:
    trades = synthetic_trades("BNBUSDT", 1_735_689_600_000, 500, seed=31, spacing_ms=2_000)
    cli(settings_for, "replay", "--source", str(write_archive(tmp_path, "BNBUSDT", "2025-01-01", trades)))
    spark_submit = Path(sys.executable).parent / "spark-submit"
    jars = ",".join(str(j) for j in cached_connector_jars(settings_for.cache_dir))
    env = env_for(settings_for, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    result = subprocess.run([str(spark_submit), "--master", "local[2]", "--jars", jars,
                             str(ROOT / "pipeline" / "spark" / "submit.py"), "--until-idle"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert settings_for.mysql_url is not None
    assert_rows_match(settings_for.mysql_url, trades)
