"""The HTTP adapter against recorded answers (vcrpy, no network) and a real local server that never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters import cassettes
from pipeline.adapters.binance import BinanceClient, make_session
from pipeline.errors import ExchangeError, ExchangeUnavailable, RateLimited
from tests.cassette_builder import answer, write

URI = "/api/v3/aggTrades?symbol=BTCUSDT&fromId=5&limit=1000"
RECORD = {"a": 5, "p": "97000.01000000", "q": "0.5", "f": 9, "l": 9, "T": 1767268800000, "m": False, "M": True}


class Clock:
    def __init__(self) -> None:
        self.now, self.slept = 1_767_268_800.0, []  # type: ignore[var-annotated]

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client(clock: Clock, retries: int = 3, **kwargs: object) -> BinanceClient:
    session = make_session(retries=retries)
    for adapter in session.adapters.values():
        adapter.max_retries.backoff_factor = 0  # type: ignore[attr-defined]  # keep retries instant in tests
    return BinanceClient(session=session, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_429_honours_retry_after_and_sends_nothing_meanwhile(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", [
        answer(URI, 429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "30"}),
        answer(URI, 200, [RECORD]),
    ])
    clock = Clock()
    binance = client(clock)
    with cassettes.playback(path):
        with pytest.raises(RateLimited) as info:
            binance.agg_trades("BTCUSDT", from_id=5)
        assert info.value.retry_after_s == 30 and not info.value.banned
        with pytest.raises(RateLimited):  # still inside the 30 s: refused locally, not sent
            binance.agg_trades("BTCUSDT", from_id=5)
        assert binance.requests_sent == 1
        clock.now += 30
        page = binance.agg_trades("BTCUSDT", from_id=5)
    assert page.records == [RECORD] and binance.requests_sent == 2


def test_418_is_a_ban_with_its_retry_after(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", [answer(URI, 418, {"code": -1003, "msg": "Way too many requests; IP banned"},
                                              {"Retry-After": "7200"})])
    clock = Clock()
    binance = client(clock)
    with cassettes.playback(path), pytest.raises(RateLimited) as info:
        binance.agg_trades("BTCUSDT", from_id=5)
    assert info.value.banned and info.value.retry_after_s == 7200
    assert binance.blocked_for_s == 7200
    with pytest.raises(RateLimited) as again:  # refused locally, still reported as the ban it is
        binance.agg_trades("BTCUSDT", from_id=5)
    assert again.value.banned and binance.requests_sent == 1


def test_500s_are_retried_then_succeed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", [answer(URI, 500, "oops"), answer(URI, 502, "<html>bad gateway</html>"),
                                       answer(URI, 200, [RECORD])])
    binance = client(Clock())
    with cassettes.playback(path):
        assert binance.agg_trades("BTCUSDT", from_id=5).records == [RECORD]


def test_persistent_500s_become_a_retryable_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", [answer(URI, 503, "unavailable")] * 3)
    with cassettes.playback(path), pytest.raises(ExchangeUnavailable, match="503"):
        client(Clock(), retries=2).agg_trades("BTCUSDT", from_id=5)


@pytest.mark.parametrize(("status", "body", "message"), [
    (400, {"code": -1121, "msg": "Invalid symbol."}, "Invalid symbol"),
    (200, "<html>maintenance</html>", "not JSON"),
    (200, {"unexpected": "object"}, "not a list"),
])
def test_error_and_garbage_bodies_become_clear_errors(tmp_path: Path, status: int, body: object,
                                                      message: str) -> None:
    path = write(tmp_path / "c.yaml", [answer(URI, status, body)])
    with cassettes.playback(path), pytest.raises(ExchangeError, match=message):
        client(Clock()).agg_trades("BTCUSDT", from_id=5)


def test_weight_budget_waits_for_the_next_minute(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", [answer(URI, 200, [RECORD], {"X-MBX-USED-WEIGHT-1M": "98"}),
                                       answer(URI, 200, [RECORD], {"X-MBX-USED-WEIGHT-1M": "4"})])
    clock = Clock()
    binance = client(clock, weight_budget=100)
    with cassettes.playback(path):
        binance.agg_trades("BTCUSDT", from_id=5)
        assert clock.slept == []
        binance.agg_trades("BTCUSDT", from_id=5)  # 98 + 4 > 100: waits for the next minute first
    assert len(clock.slept) == 1 and 0 < clock.slept[0] <= 61


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A real TCP server that accepts connections and never answers: requests must time out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_timeouts_are_retried_then_reported(silent_server: str) -> None:
    binance = BinanceClient(session=make_session(retries=1), base_url=silent_server, timeout_s=(1.0, 0.3))
    for adapter in binance._session.adapters.values():
        adapter.max_retries.backoff_factor = 0  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="Timeout|timed out"):
        binance.agg_trades("BTCUSDT", from_id=5)
    assert time.monotonic() - started < 10
