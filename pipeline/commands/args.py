"""Option checks and times shared by the commands: each refuses a bad value with one line (``ConfigError``, exit 2)
before any service is contacted."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from pipeline.core import times
from pipeline.core.trades import MIN_TIME_MS, is_symbol
from pipeline.errors import ConfigError

LONGEST_WAIT_S = 86_400.0  # a day: far beyond any useful interval or timeout, and within what a wait can take
EXCHANGE = "https://api.binance.com"  # --base-url's default (hidden: tests point it at a simulated exchange)


def positive(value: float, option: str, most: float = math.inf) -> None:
    """Refuse ``value`` unless finite and in ``(0, most]``: nan would make a poll loop spin, inf overflow a wait."""
    if not (math.isfinite(value) and 0 < value <= most):
        limit = "" if math.isinf(most) else f" and at most {most:g}"
        raise ConfigError(f"{option} must be a number above 0{limit}, got {value}")


def symbol(raw: str, option: str = "--symbol") -> str:
    if not is_symbol(raw):
        raise ConfigError(f"{option} {raw!r} is not a Binance symbol (2 to 20 of A-Z and 0-9, one per {option})")
    return raw


def now_ms() -> int:
    return int(time.time() * 1000)


def start_ms(raw: str) -> int:
    """``--start``: epoch ms or an ISO time (UTC unless it says otherwise), after 2017 and not in the future."""
    if raw.isdigit():
        ms = int(raw)
    else:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError("--start must be epoch ms or an ISO time like 2026-01-31T12:00:00Z, "
                              f"got {raw!r}") from exc
        ms = times.ms(parsed)
    if not MIN_TIME_MS <= ms <= now_ms() + 60_000:  # Binance began in 2017; not in the future
        raise ConfigError(f"--start must be a past time after 2017 in epoch ms or ISO form, got {raw!r}")
    return ms


def utc_time(raw: str | None, option: str) -> datetime | None:
    """An ISO time (``2026-01-01T12:00``, ``2026-01-01 12:00Z``, a date) as a naive UTC datetime, like the table's."""
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{option} must be an ISO time like 2026-01-01T12:00 (UTC), got {raw!r}") from exc
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def utc_ms(raw: str | None, option: str) -> int | None:
    """``utc_time`` as epoch ms, exactly."""
    parsed = utc_time(raw, option)
    return None if parsed is None else times.ms(parsed)


def iso_second(ms: int) -> str:
    return times.utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(ms: int) -> str:
    return times.utc(ms).strftime("%Y-%m-%d %H:%M:%S UTC")
