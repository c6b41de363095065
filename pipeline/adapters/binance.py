"""Binance spot REST client: timeouts, retries, rate limits and bans, on one ``requests.Session``.

- 5xx answers, connection errors and timeouts: retried by urllib3's ``Retry``, with a short backoff (at most 1 s a
  pause): urllib3's sleeps are ones a signal cannot cut, so the long waits are the caller's.
- 429 (too many requests), 418 (IP banned) and a 5xx with ``Retry-After``: the ``Retry-After`` seconds are recorded
  and *no* request is sent until they have passed; the call raises ``RateLimited`` (429, 418) or
  ``ExchangeUnavailable`` with ``retry_after_s`` (5xx) so the caller decides whether and how to wait.
- Request weight: ``X-MBX-USED-WEIGHT-1M`` is read from every answer; a request that would push the minute's weight
  past ``weight_budget`` waits for the next minute instead (Binance's limit is 6,000; the default budget is half).
- Binance error bodies (``{"code": -1121, "msg": "Invalid symbol."}``) become ``ExchangeError`` naming the request.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.core import times
from pipeline.core.ports import MAX_LIMIT, Page
from pipeline.errors import BadAnswer, ConfigError, ExchangeError, ExchangeUnavailable, RateLimited

log = logging.getLogger(__name__)

BASE_URL = "https://api.binance.com"
AGG_TRADES_WEIGHT = 4
KLINES_WEIGHT = 2  # GET /api/v3/klines, up to 1,000 minutes a request


class _Retry(Retry):
    """urllib3 would sleep out a Retry-After and send again by itself, in a sleep no signal cuts (``docker stop``
    kills after 10 s). An answer with one (429, 418, a 5xx) is returned instead: the client records it, sends
    nothing until it has passed, and the caller waits where a signal ends the wait."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return not has_retry_after and super().is_retry(method, status_code, has_retry_after)


def make_session(retries: int = 5) -> requests.Session:
    session = requests.Session()
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.25,  # pauses of 0, 0.5, then 1 s (+ jitter, capped): under 4 s over 6 attempts
        backoff_jitter=0.25,
        backoff_max=1.0,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # the last 5xx answer reaches us and becomes a clear error
        respect_retry_after_header=False,  # see _Retry: waiting one out is the caller's
    )
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.headers["User-Agent"] = "crypto-pipeline/0.1 (+aggTrades poller)"
    return session


MAX_RETRY_AFTER_S = 3 * 86_400.0  # Binance's longest ban; a longer (or absurd) Retry-After is cut to it


def _retry_after_s(response: requests.Response, default: float, now: float | None = None) -> float:
    """The seconds ``Retry-After`` asks for: delay-seconds (digits only: "nan", "inf" and "1e10" are not HTTP) or
    an HTTP date, at most ``MAX_RETRY_AFTER_S``; ``default`` when absent or neither."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if raw.isascii() and raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER_S)
    when = _http_date(raw)
    if when is None:
        return default
    return min(max(when.timestamp() - (time.time() if now is None else now), 0.0), MAX_RETRY_AFTER_S)


def _http_date(raw: str) -> datetime.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000" (RFC 5322: UTC, source unknown): never the host's local time
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


class BinanceClient:
    def __init__(
        self,
        session: requests.Session | None = None,
        base_url: str = BASE_URL,
        weight_budget: int = 3000,
        timeout_s: tuple[float, float] = (5.0, 15.0),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"the exchange URL must look like https://api.binance.com, got {base_url!r}")
        self._session = session or make_session()
        self._base_url = base_url.rstrip("/")
        self._weight_budget = weight_budget
        self._timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        self._blocked_until = 0.0
        self._banned = False  # the block came from a 418, not a 429
        self._used_weight = 0
        self._weight_minute = 0
        self.requests_sent = 0
        self.attempts_retried = 0  # failed attempts (5xx, resets, timeouts) the session retried by itself

    @property
    def blocked_for_s(self) -> float:
        return max(0.0, self._blocked_until - self._clock())

    def _respect_limits(self, weight: int) -> None:
        if self.blocked_for_s > 0:
            # Rate limited or banned: sending anything now would extend a ban, so do not.
            raise RateLimited(f"Binance asked for no requests for {self.blocked_for_s:.0f}s more",
                              self.blocked_for_s, banned=self._banned)
        now = self._clock()
        minute = int(now // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._used_weight = minute, 0
        if self._used_weight + weight > self._weight_budget:
            wait = 60 - now % 60 + 0.5
            log.warning("request weight %d of budget %d used this minute; waiting %.1fs",
                        self._used_weight, self._weight_budget, wait)
            self._sleep(wait)
            self._weight_minute, self._used_weight = int(self._clock() // 60), 0

    def get(self, path: str, params: dict[str, Any], weight: int) -> requests.Response:
        self._respect_limits(weight)
        url = f"{self._base_url}{path}"
        try:
            response = self._session.get(url, params=params, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise ExchangeUnavailable(f"GET {path} failed after retries: {type(exc).__name__}: {exc}") from exc
        finally:
            self.requests_sent += 1
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        if history:
            self.attempts_retried += len(history)
            log.warning("GET %s: %d failed attempts retried before this answer (%s)", path, len(history),
                        ", ".join(str(h.status or type(h.error).__name__) for h in history))
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self._used_weight = int(used)
        else:
            self._used_weight += weight
        if response.status_code in (418, 429):
            banned = response.status_code == 418
            wait = _retry_after_s(response, 120.0 if banned else 60.0, self._clock())
            self._blocked_until, self._banned = self._clock() + wait, banned
            what = "banned this IP (418)" if banned else "rate limited us (429)"
            raise RateLimited(f"Binance {what}; no requests for {wait:.0f}s", wait, banned)
        if response.status_code >= 500 or response.status_code == 403:  # 403: Binance's WAF, transient
            pause = _retry_after_s(response, 0.0, self._clock())
            if pause > 0:  # not retried by the session (see _Retry): no request at all until it has passed
                self._blocked_until, self._banned = self._clock() + pause, False
                raise ExchangeUnavailable(f"Binance answered GET {path} with {_error_text(response)}; no requests "
                                          f"for {pause:.0f}s", pause)
            raise ExchangeUnavailable(f"Binance kept failing GET {path}: {_error_text(response)}")
        if response.status_code >= 400:
            raise ExchangeError(f"Binance rejected GET {path} {params}: {_error_text(response)}")
        return response

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time_ms: int | None = None,
                   end_time_ms: int | None = None, limit: int = MAX_LIMIT) -> Page:
        params: dict[str, Any] = {"symbol": symbol}
        if from_id is not None:
            params["fromId"] = from_id
        if start_time_ms is not None:
            params["startTime"] = start_time_ms
        if end_time_ms is not None:
            params["endTime"] = end_time_ms
        params["limit"] = limit
        response = self.get("/api/v3/aggTrades", params, AGG_TRADES_WEIGHT)
        body = _json_list(response, f"aggTrades {symbol}")
        return Page(records=body, server_time_ms=_server_time_ms(response), used_weight=self._used_weight)

    def klines(self, symbol: str, start_ms: int, end_ms: int, limit: int = MAX_LIMIT) -> list[list[Any]]:
        """1-minute klines opening in ``[start_ms, end_ms]`` (at most ``limit``), as Binance sends them: lists of
        open time, open, high, low, close, volume, close time, quote volume, number of trades, ... The same
        weight accounting, Retry-After and ban discipline as every request."""
        params = {"symbol": symbol, "interval": "1m", "startTime": start_ms, "endTime": end_ms, "limit": limit}
        body = _json_list(self.get("/api/v3/klines", params, KLINES_WEIGHT), f"klines {symbol}")
        if not all(isinstance(k, list) and len(k) >= 9 for k in body):
            raise BadAnswer(f"Binance answered GET klines {symbol} with {str(body)[:200]!r}, not a list of klines")
        return body


def _json_list(response: requests.Response, what: str) -> list[Any]:
    """The answer's JSON list, or ``BadAnswer`` saying what came instead (an HTML page, an object, half a body)."""
    try:
        body = response.json()
    except ValueError as exc:
        raise BadAnswer(f"Binance answered GET {what} with a body that is not JSON: {response.text[:120]!r}") from exc
    if not isinstance(body, list):
        raise BadAnswer(f"Binance answered GET {what} with {str(body)[:200]!r}, not a list")
    return body


def _server_time_ms(response: requests.Response) -> int | None:
    parsed = _http_date(response.headers.get("Date") or "")
    return None if parsed is None else times.ms(parsed)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]!r}"
    if isinstance(body, dict) and "msg" in body:
        return f"{body['msg']} (code {body.get('code')}, HTTP {response.status_code})"
    return f"HTTP {response.status_code}: {str(body)[:200]}"
