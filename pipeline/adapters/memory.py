"""In-memory implementations of the ports, for tests and for trying the logic without services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.core.messages import Heartbeat
from pipeline.core.ports import MAX_LIMIT, Page
from pipeline.core.trades import Trade


class InMemorySink:
    """Keeps what was sent; ``flush`` moves it to ``acknowledged`` (or raises ``fail_with`` once, if set)."""

    def __init__(self) -> None:
        self.pending: list[Trade | Heartbeat] = []
        self.acknowledged: list[Trade | Heartbeat] = []
        self.fail_with: Exception | None = None

    def send_trade(self, trade: Trade) -> None:
        self.pending.append(trade)

    def send_heartbeat(self, heartbeat: Heartbeat) -> None:
        self.pending.append(heartbeat)

    def flush(self, timeout_s: float = 120.0) -> int:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            self.pending.clear()
            raise exc
        done, self.pending = self.pending, []
        self.acknowledged.extend(done)
        return len(done)

    @property
    def trades(self) -> list[Trade]:
        return [t for t in self.acknowledged if isinstance(t, Trade)]


class InMemoryExchange:
    """An ``ExchangeSource`` over in-memory aggTrade records with Binance's paging rules, on a given clock.

    ``faults`` are raised, in order, by the next calls (a 429 as ``RateLimited``, an HTML page as ``BadAnswer``...);
    ``calls`` records (clock seconds, symbol, arguments) of every call.
    """

    def __init__(self, records: dict[str, list[dict[str, Any]]], clock: Callable[[], float],
                 faults: list[Exception] | None = None) -> None:
        self.records, self.clock, self.faults = records, clock, list(faults or [])
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time_ms: int | None = None,
                   end_time_ms: int | None = None, limit: int = MAX_LIMIT) -> Page:
        self.calls.append((self.clock(), symbol, {"from_id": from_id, "start_time_ms": start_time_ms,
                                                  "end_time_ms": end_time_ms, "limit": limit}))
        if self.faults:
            raise self.faults.pop(0)
        now_ms = int(self.clock() * 1000)
        visible = [r for r in self.records[symbol] if r["T"] <= now_ms]
        if from_id is not None:
            page = [r for r in visible if r["a"] >= from_id][:limit]
        elif start_time_ms is not None:  # a time range answers its *last* `limit` trades, as Binance does
            end = end_time_ms if end_time_ms is not None else start_time_ms + 3_600_000
            page = [r for r in visible if start_time_ms <= r["T"] <= end][-limit:]
        else:
            page = visible[-limit:]
        return Page(records=page, server_time_ms=now_ms, used_weight=None)
