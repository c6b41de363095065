"""The HTTP client: the server clock the poller's coverage rests on (the Date header), the exchange URL, and
waits a signal can cut (a local HTTP server on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from pipeline import poller
from pipeline.adapters.binance import (
    MAX_RETRY_AFTER_S,
    BinanceClient,
    RateLimited,
    _retry_after_s,
    _server_time_ms,
    make_session,
)
from pipeline.core.counters import Counters
from pipeline.errors import ConfigError


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host whose local time is not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("date", ["Thu, 01 Jan 2026 12:00:00 GMT", "Thu, 01 Jan 2026 12:00:00 +0000",
                                  "Thu, 01 Jan 2026 12:00:00 -0000", "Thu, 01 Jan 2026 13:00:00 +0100"])
def test_every_utc_spelling_gives_the_same_instant(date: str, new_york: None) -> None:
    response = requests.models.Response()
    response.headers["Date"] = date
    assert _server_time_ms(response) == 1_767_268_800_000  # never the host's local time


def test_no_or_bad_date_is_none() -> None:
    response = requests.models.Response()
    assert _server_time_ms(response) is None
    response.headers["Date"] = "yesterday"
    assert _server_time_ms(response) is None


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("9000000000", MAX_RETRY_AFTER_S),  # 285 years: cut to 3 days
    ("Thu, 01 Jan 2026 12:01:30 GMT", 90.0), ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # an HTTP date, past or not
    ("nan", 60.0), ("inf", 60.0), ("1e10", 60.0), ("-5", 60.0), ("1.5", 60.0), ("soon", 60.0), ("", 60.0),
])
def test_retry_after_is_delay_seconds_or_an_http_date_and_bounded(header: str, seconds: float) -> None:
    """"inf" or "1e10" crashed the producer (OverflowError in a wait), "nan" let it send at once, a date was read
    as no wait at all, and 9000000000 slept for centuries."""
    response = requests.models.Response()
    response.headers["Retry-After"] = header
    assert _retry_after_s(response, 60.0, now=1_767_268_800.0) == seconds


@pytest.mark.parametrize("url", ["api.binance.com", "ftp://api.binance.com", "https://", "http:///x",
                                 "https://api.binance.com?x=1", "not a url"])
def test_a_malformed_exchange_url_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(ConfigError, match="must look like https://api.binance.com"):
        BinanceClient(base_url=url)


class _Scripted(BaseHTTPRequestHandler):
    """Answers from the server's script in order (the last one again and again), counting requests."""

    server: _ScriptedServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        server.requests += 1
        status, headers, body = server.script[min(server.requests, len(server.script)) - 1]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    script: list[tuple[int, dict[str, str], bytes]]
    requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def scripted() -> Iterator[_ScriptedServer]:
    server = _ScriptedServer(("127.0.0.1", 0), _Scripted)
    server.script = [(200, {"Content-Type": "application/json"}, b"[]")]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


UNAVAILABLE = (503, {"Retry-After": "60", "Content-Type": "text/html"}, b"<html>down for maintenance</html>")


def test_a_503s_retry_after_is_waited_out_where_a_stop_cuts_it(scripted: _ScriptedServer) -> None:
    """503 with Retry-After: 60, stopped after 1 s (what SIGTERM does): the poll ends at once, not after urllib3
    slept the Retry-After out, and nothing is sent during it."""
    scripted.script = [UNAVAILABLE]
    stopping = threading.Event()
    client = BinanceClient(session=make_session(), base_url=scripted.url, sleep=stopping.wait)
    states = poller.start_states(["BTCUSDT"], {}, int(time.time() * 1000))
    counters = Counters()
    worker = threading.Thread(target=lambda: list(poller.poll(client, states, counters, lag_ms=5_000,
                                                              sleep=stopping.wait, stop=stopping.is_set)),
                              daemon=True)
    timer = threading.Timer(1.0, stopping.set)
    started = time.monotonic()
    timer.start()
    worker.start()
    worker.join(10)
    timer.cancel()
    assert not worker.is_alive() and time.monotonic() - started < 10
    assert scripted.requests == 1 and counters.exchange_errors == 1
    assert client.blocked_for_s > 50  # still honoured: a request now is refused without being sent
    with pytest.raises(RateLimited):
        client.agg_trades("BTCUSDT", from_id=1)
    assert scripted.requests == 1


def test_the_session_still_retries_5xx_and_counts_the_attempts(scripted: _ScriptedServer) -> None:
    scripted.script = [(500, {}, b"oops"), (502, {}, b"<html>bad gateway</html>"), (503, {}, b""), (504, {}, b""),
                       (500, {}, b""), (200, {"Content-Type": "application/json"}, b"[]")]
    client = BinanceClient(session=make_session(), base_url=scripted.url)
    started = time.monotonic()
    assert client.agg_trades("BTCUSDT", from_id=1).records == []
    assert client.attempts_retried == 5 and scripted.requests == 6
    assert time.monotonic() - started < 8  # urllib3's own backoff stays short: a signal cannot cut it
