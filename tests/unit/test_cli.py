"""The command line's error contract: one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pipeline.cli import main


@pytest.mark.parametrize(("argv", "needle"), [
    (["replay"], "required: --source"),
    (["replay", "--source"], "expected one argument"),
    (["nope"], "invalid choice"),
    (["produce", "--mode", "paper"], "invalid choice"),
])
def test_usage_errors_are_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_bad_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PIPELINE_WATERMARK_SECONDS", "soon")
    assert main(["stack", "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PIPELINE_WATERMARK_SECONDS" in err


def test_unexpected_failures_are_one_line_unless_verbose(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import pipeline.cli as cli

    def boom(*_args: object) -> int:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(cli.stack, "run", boom)
    assert main(["stack", "status"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something nobody planned for" in err
    with pytest.raises(RuntimeError):
        main(["-v", "stack", "status"])


@pytest.fixture
def own_signals() -> Iterator[None]:
    """Commands install SIGINT/SIGTERM handlers; pytest gets its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def no_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Reaching Kafka, MySQL, Spark or an exchange fails the command with 70 (an AssertionError), never 2."""
    import requests

    from pipeline.compose import Root

    def contacted(*_args: object, **_kwargs: object) -> NoReturn:
        raise AssertionError("a service was contacted")

    # Every connection a command makes comes from the composition root; and an exchange answers over requests.
    for owner, name in ((Root, "kafka_bootstrap"), (Root, "mysql_url"), (Root, "mysql_read_url"), (Root, "sink"),
                        (Root, "spark"), (Root, "stack"), (requests.Session, "send")):
        monkeypatch.setattr(owner, name, contacted)
    monkeypatch.chdir(tmp_path)


PRODUCE = ["produce", "--mode", "live"]
BY_TIME = ["--from", "2025-01-01T00:00", "--until", "2025-01-01T01:00"]


@pytest.mark.parametrize(("argv", "option"), [
    *[([*PRODUCE, "--poll-interval", v], "--poll-interval") for v in ("-1", "0", "nan", "inf")],
    *[([*PRODUCE, "--request-timeout", v], "--request-timeout") for v in ("nan", "inf")],
    *[(["process", "--trigger-seconds", v], "--trigger-seconds") for v in ("nan", "inf", "0")],
    *[(["process", "--max-offsets-per-trigger", v], "--max-offsets-per-trigger") for v in ("0", "nan", "1e6")],
    *[([*PRODUCE, "--weight-budget", v], "--weight-budget") for v in ("0", "6001")],
    ([*PRODUCE, "--start", "1735689600"], "--start"),  # seconds, read as ms: 1970
    *[(["record", "--out", "r.yaml", "--minutes", v], "--minutes") for v in ("nan", "inf", "-1")],
    (["status", "--stalled-after", "nan"], "--stalled-after"),
    *[(["backfill", "--symbol", s, *BY_TIME], "--symbol") for s in ("btc-usdt", "BTCUSDT,ETHUSDT", "X")],
])
def test_bad_numbers_and_symbols_exit_2_before_any_service_is_contacted(
        argv: list[str], option: str, no_services: None, own_signals: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err


def _record_against_a_rate_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minutes: str,
                                 retry_after_s: float, interrupt_after_s: float | None) -> tuple[int, float, int]:
    """``pipeline record`` against a simulated Binance whose first answer is a 429 with ``retry_after_s``; the
    exit code, the seconds it took and the requests the exchange saw."""
    from tests.sim_binance import MARKETS, SimBinance

    monkeypatch.setenv("PIPELINE_SYMBOLS", "BTCUSDT")
    out = tmp_path / "rec.yaml"
    with SimBinance([MARKETS["BTCUSDT"]], seed=1, history_start_ms=int(time.time() * 1000) - 120_000) as sim:
        sim.inject("429", retry_after_s=retry_after_s)
        timer = threading.Timer(interrupt_after_s or 0.0, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        if interrupt_after_s is not None:
            timer.start()
        try:
            code = main(["record", "--out", str(out), "--minutes", minutes, "--base-url", sim.base_url])
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
    assert out.exists()  # what was recorded is saved
    return code, elapsed, len(sim.requests_log)


def test_ctrl_c_ends_a_record_that_waits_out_a_rate_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          own_signals: None) -> None:
    code, elapsed, requests = _record_against_a_rate_limit(tmp_path, monkeypatch, "0.5", 20.0, 1.0)
    assert code == 0 and elapsed < 10  # not after the 20 s Retry-After
    assert requests == 1  # and nothing was sent during it


def test_a_record_ends_at_its_deadline_even_inside_a_rate_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                own_signals: None) -> None:
    code, elapsed, requests = _record_against_a_rate_limit(tmp_path, monkeypatch, "0.05", 60.0, None)
    assert code == 0 and elapsed < 20 and requests == 1  # 3 s of --minutes, not the 60 s Retry-After
