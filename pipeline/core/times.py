"""Epoch milliseconds <-> naive UTC datetimes (what DATETIME columns hold; sessions run in UTC), exactly: through a
float, 253402300799999 ms came out as .998993 s and a datetime's ms could come out one short."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1)
_DATETIME_END_MS = 253_402_300_800_000  # 10000-01-01: DATETIME (and Python) end before it
_MS = timedelta(milliseconds=1)


def utc(ms: int) -> datetime:
    """Epoch ms -> naive UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def utc_or_none(ms: int | None) -> datetime | None:
    """``utc`` for a time nobody validated (a Kafka timestamp, which any producer sets): None when unknown (Kafka's
    -1) or past what DATETIME holds, instead of an error that would fail the batch at every start."""
    return utc(ms) if ms is not None and 0 < ms < _DATETIME_END_MS else None


def ms(value: datetime) -> int:
    """``utc``'s inverse; an aware datetime is taken in its own zone."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - _EPOCH) // _MS


def utc_now() -> datetime:
    """Now as a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso_minute(ms_: int) -> str:
    """``2026-01-31T12:00Z``: a minute as people read it."""
    return utc(ms_).strftime("%Y-%m-%dT%H:%MZ")
