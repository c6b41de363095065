"""A simulated Binance spot REST server for tests: a real HTTP server on 127.0.0.1, not a mock.

Each market's aggTrades are a Poisson process drawn from ``random.Random(f"{seed}:{symbol}")``, generated lazily up
to the sim's clock. The next record is always drawn one ahead of time, so the sequence depends only on the seed and
the market, never on when or how often it is read. ``/api/v3/aggTrades`` follows Binance's paging semantics and
request weights; rate limits (429, then 418 for anyone who keeps sending) and faults (``inject``) behave like the
real exchange as far as a client can tell.
"""

from __future__ import annotations

import bisect
import email.utils
import json
import math
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pipeline.core.trades import Trade, parse_rest

WEIGHTS = {"/api/v3/aggTrades": 4, "/api/v3/klines": 2, "/api/v3/time": 1, "/api/v3/ping": 1}
FAULT_KINDS = frozenset({"5xx", "429", "418", "html200", "wrong_shape", "truncated", "slow", "reset"})
INVALID_ODDS = 1 / 2000  # Binance's invalid records (p=0, q=0, f=l=-1), since 2022
_STEPS = (-3, -2, -1, -1, 0, 0, 0, 1, 1, 2, 3)  # price moves, in ticks
_JSON = "application/json;charset=UTF-8"
_HTML = "text/html"


@dataclass(frozen=True)
class SimMarket:
    symbol: str
    rate_per_s: float  # mean aggTrades per second
    price: Decimal
    tick: Decimal
    lot: Decimal
    max_lots: int
    first_agg_id: int
    first_trade_id: int


# Skewed markets with Binance-like rates (aggTrades per second): BTCUSDT is about 60x ADAUSDT.
MARKETS = {m.symbol: m for m in (
    SimMarket("BTCUSDT", 25.0, Decimal("97000"), Decimal("0.01"), Decimal("0.00001"), 20000, 3_500_000_000,
              5_100_000_000),
    SimMarket("ETHUSDT", 6.0, Decimal("3400"), Decimal("0.01"), Decimal("0.0001"), 30000, 2_100_000_000,
              3_000_000_000),
    SimMarket("SOLUSDT", 2.0, Decimal("190"), Decimal("0.01"), Decimal("0.001"), 50000, 900_000_000,
              1_200_000_000),
    SimMarket("ADAUSDT", 0.4, Decimal("0.95"), Decimal("0.0001"), Decimal("0.1"), 100000, 600_000_000,
              700_000_000),
)}


@dataclass
class _Fault:
    kind: str
    count: int
    retry_after_s: float
    delay_s: float
    symbol: str | None


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = _JSON
    retry_after: str | None = None
    delay_s: float = 0.0
    reset: bool = False


def _error(status: int, code: int, msg: str) -> _Answer:
    return _Answer(status, json.dumps({"code": code, "msg": msg}).encode())


class _Tape:
    """One market's records, in agg-id (and event-time) order; ``pending`` is the next one, already drawn."""

    def __init__(self, market: SimMarket, seed: int, start_ms: int) -> None:
        self.market, self.rng = market, random.Random(f"{seed}:{market.symbol}")
        self.t_ms, self.price = float(start_ms), market.price
        self.agg_id, self.trade_id = market.first_agg_id, market.first_trade_id
        self.records: list[dict[str, Any]] = []
        self.times: list[int] = []
        self.trades: list[Trade] = []  # records[:len(trades)] parsed, on demand
        self.pending = self._draw()

    def _draw(self) -> dict[str, Any]:
        m, rng = self.market, self.rng
        self.t_ms += rng.expovariate(m.rate_per_s) * 1000
        self.price = max(m.tick, self.price + m.tick * rng.choice(_STEPS))
        fills = 1 if rng.random() < 0.7 else rng.randint(2, 12)
        qty = m.lot * rng.randint(1, m.max_lots)
        maker, invalid = rng.random() < 0.5, rng.random() < INVALID_ODDS
        record = {"a": self.agg_id, "p": f"{self.price:.8f}", "q": f"{qty:.8f}", "f": self.trade_id,
                  "l": self.trade_id + fills - 1, "T": int(self.t_ms), "m": maker, "M": True}
        if invalid:
            record.update({"p": "0.00000000", "q": "0.00000000", "f": -1, "l": -1})
        else:
            self.trade_id += fills
        self.agg_id += 1
        return record

    def advance(self, now_ms: int, frozen_ms: int | None) -> None:
        while self.pending["T"] <= now_ms and (frozen_ms is None or self.pending["T"] < frozen_ms):
            self.records.append(self.pending)
            self.times.append(self.pending["T"])
            self.pending = self._draw()

    def parsed(self) -> list[Trade]:
        symbol = self.market.symbol
        self.trades.extend(parse_rest(symbol, r) for r in self.records[len(self.trades):])
        return list(self.trades)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: SimBinance

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the game, not an error worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        sim = self.server.sim
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        answer, date, weight = sim._answer(parts.path, params)
        time.sleep(sim.latency_s + answer.delay_s)
        if answer.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response_only(answer.status)  # not send_response: its Date is the host's, not the sim's clock
        for name, value in (("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
                            ("Date", date), ("X-MBX-USED-WEIGHT-1M", str(weight)), ("Retry-After", answer.retry_after)):
            if value is not None:
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SimBinance:
    def __init__(self, markets: list[SimMarket], *, seed: int, history_start_ms: int, latency_s: float = 0.0,
                 weight_limit: int = 6000, clock: Callable[[], float] = time.time) -> None:
        self.markets = {m.symbol: m for m in markets}
        self.latency_s, self.weight_limit, self.clock = latency_s, weight_limit, clock
        self._tapes = {m.symbol: _Tape(m, seed, history_start_ms) for m in markets}
        self._frozen_ms: int | None = None
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._fivexx = 0
        self._minute, self._used = -1, 0
        self._wait_until = 0.0  # a 429's Retry-After: whoever sends before it ends is banned (418)
        self._ban_until = 0.0
        self._server: _Server | None = None
        self.base_url = ""  # set by start()
        self.requests_log: list[tuple[str, dict[str, str], int]] = []
        self.faults_served: Counter[str] = Counter()  # injected kinds, plus "limit_429" and "ban_418" earned

    def freeze(self, at_ms: int) -> None:
        """No trade with T >= at_ms is ever generated: the market goes quiet from then on."""
        with self._lock:
            late = [s for s, tape in self._tapes.items() if tape.times and tape.times[-1] >= at_ms]
            if late:
                raise ValueError(f"trades at or after {at_ms} were already served for {late}")
            self._frozen_ms = at_ms

    def inject(self, kind: str, count: int = 1, *, retry_after_s: float = 2.0, delay_s: float = 0.0,
               symbol: str | None = None) -> None:
        """Queue ``count`` faults of ``kind`` for the next aggTrades requests (for ``symbol``, or any)."""
        if kind not in FAULT_KINDS or count < 1:
            raise ValueError(f"unknown fault {kind!r} (one of {sorted(FAULT_KINDS)}) or count {count} < 1")
        with self._lock:
            self._faults.append(_Fault(kind, count, retry_after_s, delay_s, symbol))

    def served_trades(self, symbol: str) -> list[Trade]:
        """Every record generated so far (invalid ones included), in agg-id order."""
        with self._lock:
            return self._tapes[symbol].parsed()

    def all_trades(self) -> list[Trade]:
        with self._lock:
            return [t for tape in self._tapes.values() for t in tape.parsed()]

    def start(self) -> str:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.sim = self
        threading.Thread(target=server.serve_forever, args=(0.05,), name="sim-binance", daemon=True).start()
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SimBinance:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _answer(self, path: str, params: dict[str, str]) -> tuple[_Answer, str, int]:
        with self._lock:
            now = self.clock()
            answer = self._decide(now, path, params)
            self.requests_log.append((path, params, 0 if answer.reset else answer.status))
            return answer, email.utils.formatdate(now, usegmt=True), self._used

    def _decide(self, now: float, path: str, params: dict[str, str]) -> _Answer:
        if path not in WEIGHTS:
            return _Answer(404, b"<html><body><h1>404 Not Found</h1></body></html>", _HTML)
        if now < self._ban_until:
            return self._banned(now)
        if now < self._wait_until:  # kept sending during a 429's wait: Binance bans the IP
            self._ban_until = now + max(2.0, 2 * (self._wait_until - now))
            return self._banned(now)
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        self._used += WEIGHTS[path]
        if self._used > self.weight_limit:
            self._wait_until = (minute + 1) * 60.0
            self.faults_served["limit_429"] += 1
            answer = _error(429, -1003, f"Too many requests; current limit is {self.weight_limit} request weight "
                                        "per 1 MINUTE. Please use WebSocket Streams for live updates.")
            answer.retry_after = str(max(1, math.ceil(self._wait_until - now)))
            return answer
        if path == "/api/v3/time":
            return _Answer(200, json.dumps({"serverTime": int(now * 1000)}).encode())
        if path == "/api/v3/ping":
            return _Answer(200, b"{}")
        if path == "/api/v3/klines":
            return self._klines(now, params)
        fault = self._take_fault(params.get("symbol"))
        if fault is None:
            return self._agg_trades(now, params)
        self.faults_served[fault.kind] += 1
        if fault.kind in ("429", "418"):  # a real wait window (429) or ban (418) starts on the server too
            if fault.kind == "429":
                self._wait_until = now + fault.retry_after_s
            else:
                self._ban_until = now + fault.retry_after_s
            answer = _error(int(fault.kind), -1003, "Too many requests; IP rate limited or banned.")
            answer.retry_after = f"{fault.retry_after_s:g}"
            return answer
        if fault.kind == "5xx":  # 503 (HTML), 500 (JSON), 502 (HTML), 503, ...
            self._fivexx += 1
            if self._fivexx % 3 == 2:
                return _error(500, -1000, "An unknown error occurred while processing the request.")
            title = "503 Service Temporarily Unavailable" if self._fivexx % 3 == 1 else "502 Bad Gateway"
            return _Answer(int(title[:3]), f"<html><body><center><h1>{title}</h1></center></body></html>".encode(),
                           _HTML)
        if fault.kind == "html200":
            return _Answer(200, b"<html><body><h1>System maintenance</h1><p>We'll be back soon.</p></body></html>",
                           _HTML)
        if fault.kind == "wrong_shape":
            return _Answer(200, b'{"code":0,"msg":"ok"}')
        if fault.kind == "reset":
            return _Answer(0, reset=True)
        answer = self._agg_trades(now, params)
        if fault.kind == "truncated":
            answer.body = answer.body[: len(answer.body) // 2]
        else:  # slow
            answer.delay_s = fault.delay_s
        return answer

    def _banned(self, now: float) -> _Answer:
        self.faults_served["ban_418"] += 1
        answer = _error(418, -1003, "Way too many requests; IP banned until further notice.")
        answer.retry_after = str(max(1, math.ceil(self._ban_until - now)))
        return answer

    def _take_fault(self, symbol: str | None) -> _Fault | None:
        for fault in self._faults:
            if fault.symbol is None or fault.symbol == symbol:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _klines(self, now: float, params: dict[str, str]) -> _Answer:
        """1m klines consistent with the trades this market serves (Binance's invalid records left out), for
        every minute from startTime to endTime up to now: a minute without trades repeats the last close."""
        symbol = params.get("symbol", "")
        if symbol not in self._tapes:
            return _error(400, -1121, "Invalid symbol.")
        if params.get("interval") != "1m":
            return _error(400, -1120, "Invalid interval.")
        try:
            start, end = int(params["startTime"]), int(params["endTime"])
            limit = int(params.get("limit", "500"))
        except (KeyError, ValueError):
            return _error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1 - 1000'.")
        now_ms = int(now * 1000)
        for each in self._tapes.values():
            each.advance(now_ms, self._frozen_ms)
        tape = self._tapes[symbol]
        by_minute: dict[int, list[dict[str, Any]]] = {}
        for record in tape.records:
            if record["f"] != -1:
                by_minute.setdefault(record["T"] - record["T"] % 60_000, []).append(record)
        if not tape.records:
            return _Answer(200, b"[]")
        first_minute = tape.records[0]["T"] - tape.records[0]["T"] % 60_000
        minute = max(start - start % 60_000 + (60_000 if start % 60_000 else 0), first_minute)
        last_close = None
        for m in sorted(by_minute):
            if m < minute:
                last_close = by_minute[m][-1]["p"]
        klines: list[list[Any]] = []
        while minute <= min(end, now_ms) and len(klines) < limit:
            records = by_minute.get(minute, [])
            if records:
                prices = [Decimal(r["p"]) for r in records]
                volume = sum((Decimal(r["q"]) for r in records), Decimal(0))
                quote = sum((Decimal(r["p"]) * Decimal(r["q"]) for r in records), Decimal(0))
                last_close = records[-1]["p"]
                klines.append([minute, records[0]["p"], f"{max(prices):.8f}", f"{min(prices):.8f}", records[-1]["p"],
                               f"{volume:.8f}", minute + 59_999, f"{quote.quantize(Decimal('0.00000001'))}",
                               sum(r["l"] - r["f"] + 1 for r in records), "0", "0", "0"])
            else:
                close = last_close or "0.00000000"
                klines.append([minute, close, close, close, close, "0.00000000", minute + 59_999, "0.00000000", 0,
                               "0", "0", "0"])
            minute += 60_000
        return _Answer(200, json.dumps(klines).encode())

    def _agg_trades(self, now: float, params: dict[str, str]) -> _Answer:
        symbol = params.get("symbol", "")
        if not symbol:
            return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in self._tapes:
            return _error(400, -1121, "Invalid symbol.")
        ints: dict[str, int] = {}
        for name in ("fromId", "startTime", "endTime", "limit"):
            raw = params.get(name)
            if raw is not None:
                if not (raw.isdigit() and len(raw) <= 20):
                    return _error(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                              "legal range is '^[0-9]{1,20}$'.")
                ints[name] = int(raw)
        limit = ints.get("limit", 500)
        if not 1 <= limit <= 1000:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1 - 1000'.")
        start, end = ints.get("startTime"), ints.get("endTime")
        if "fromId" in ints and (start is not None or end is not None):
            return _error(400, -1128, "Combination of optional parameters invalid.")
        if start is not None and end is not None and not 0 <= end - start <= 3_600_000:
            return _error(400, -1127, "More than 1 hours between startTime and endTime.")
        for each in self._tapes.values():
            each.advance(int(now * 1000), self._frozen_ms)
        tape = self._tapes[symbol]
        last = len(tape.times) if end is None else bisect.bisect_right(tape.times, end)
        if "fromId" in ints:
            first = max(0, ints["fromId"] - tape.market.first_agg_id)
            page = tape.records[first:first + limit]
        elif start is not None:
            # A time range answers its *last* `limit` trades (binance-spot-api-docs issue #10). Without endTime the
            # range is taken as one hour: the least favourable reading, so the poller must not rely on either.
            if end is None:
                last = bisect.bisect_right(tape.times, start + 3_600_000)
            first = bisect.bisect_left(tape.times, start)
            page = tape.records[max(first, last - limit):last]
        else:  # the newest `limit` (up to endTime, if given)
            page = tape.records[max(0, last - limit):last]
        return _Answer(200, json.dumps(page, separators=(",", ":")).encode())
