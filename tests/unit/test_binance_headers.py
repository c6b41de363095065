"""The server clock the poller's coverage rests on, read from the Date header."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from pipeline.adapters.binance import BinanceClient, _server_time_ms
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


@pytest.mark.parametrize("url", ["api.binance.com", "ftp://api.binance.com", "https://", "http:///x",
                                 "https://api.binance.com?x=1", "not a url"])
def test_a_malformed_exchange_url_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(ConfigError, match="must look like https://api.binance.com"):
        BinanceClient(base_url=url)
