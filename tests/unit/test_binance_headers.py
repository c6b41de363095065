"""The server clock the poller's coverage rests on, read from the Date header."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from pipeline.adapters.binance import _server_time_ms


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
