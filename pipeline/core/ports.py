"""The ports the core's callers are written against, owned by the inner layer: the exchange source, the trade sink
(and, below, the window store). Adapters implement them (``adapters.binance``, ``adapters.kafka_io``,
``adapters.mysql``); ``adapters.memory`` has in-memory fakes for the unit tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Trade

MAX_LIMIT = 1000  # records in one answer of /api/v3/aggTrades at most


@dataclasses.dataclass(frozen=True)
class Page:
    """One answer of ``/api/v3/aggTrades``: the raw records and the server's clock when it answered."""

    records: list[dict[str, Any]]
    server_time_ms: int | None
    used_weight: int | None


class ExchangeSource(Protocol):
    """Pages of aggTrades: ``BinanceClient`` (live or cassette playback), ``memory.InMemoryExchange``. Raises
    ``errors.RateLimited`` or ``errors.ExchangeUnavailable`` (``BadAnswer``) when it cannot answer."""

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time_ms: int | None = None,
                   end_time_ms: int | None = None, limit: int = MAX_LIMIT) -> Page: ...


class TradeSink(Protocol):
    """Where trades and heartbeats are published: ``kafka_io.TradeSink``, ``memory.InMemorySink``. ``flush`` waits
    until everything sent is acknowledged and returns how many were."""

    def send_trade(self, trade: Trade) -> None: ...
    def send_heartbeat(self, heartbeat: Heartbeat) -> None: ...
    def flush(self, timeout_s: float = 120.0) -> int: ...
