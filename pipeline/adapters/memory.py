"""In-memory implementations of the ports, for tests and for trying the logic without services."""

from __future__ import annotations

from pipeline.core.messages import Heartbeat
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
