"""Live pace: trades stamped now sent at a steady rate, with a coverage heartbeat per symbol every second, as the
live producer sends them; every ack timed."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.adapters.kafka_io import TradeSink
from pipeline.bench.report import every
from pipeline.bench.workload import LiveTrades
from pipeline.core import messages
from pipeline.core.windows import WINDOW_MS

HEARTBEAT_LAG_S = 1.0  # live runs: a heartbeat declares complete what is older than this


@dataclasses.dataclass
class Sent:
    """What a live run sent, filled in by the producer's callbacks as the broker acknowledges it."""

    acks: list[tuple[int, int, float] | None]  # per trade: partition, offset, ack time
    windows: list[tuple[str, int]]  # per trade: its (symbol, minute start)
    heartbeats: list[tuple[str, int, float]]  # symbol, T, ack time
    started_s: float = 0.0
    seconds: float = 0.0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def trade_acked(self, index: int, metadata: Any) -> None:
        self.acks[index] = (metadata.partition, metadata.offset, time.time())

    def heartbeat_acked(self, symbol: str, t: int, _metadata: Any) -> None:
        with self._lock:
            self.heartbeats.append((symbol, t, time.time()))


class LiveProducer:
    """Trades stamped now at ``rate``/s over the 5 symbols (``workload.LiveTrades``), and every second a coverage
    heartbeat per symbol (``T`` = now - lag) after a flush, as the live producer sends them."""

    def __init__(self, sink: TradeSink, rate: int, lag_s: float = HEARTBEAT_LAG_S, seed: int = 5) -> None:
        self.sink, self.rate, self.lag_ms = sink, rate, int(lag_s * 1000)
        self.trades = LiveTrades(seed)
        # the sink's own KafkaProducer, settings included: sends timed one by one, none of the sink's bookkeeping
        self.producer, self.topic = sink._producer, sink.topic

    def run(self, seconds: float, need_final: bool, progress: Callable[[str], None],
            status: Callable[[Sent], str] | None = None) -> Sent:
        """``seconds`` of trades (longer if ``need_final`` and no minute would end within them); ``status`` adds to
        the progress lines."""
        sent = Sent([], [], [])
        start_s = sent.started_s = time.time()
        covered_from = int(start_s * 1000) // WINDOW_MS * WINDOW_MS  # a first start: the start of its minute
        end_s = start_s + seconds
        if need_final:  # at least one minute must end (and be declared) while trades flow
            boundary = (int(start_s * 1000) // WINDOW_MS + 1) * WINDOW_MS / 1000
            end_s = max(end_s, boundary + self.lag_ms / 1000 + 1.5)
        t0, next_beat, tick = time.monotonic(), time.monotonic() + 1.0, every(10.0)
        try:
            while (now := time.monotonic()) < t0 + (end_s - start_s):
                self._send_due(sent, int((now - t0) * self.rate) - len(sent.windows))
                if now >= next_beat:
                    self._beat(sent, covered_from)
                    next_beat += 1.0
                if tick():
                    progress(f"    {len(sent.windows):,} trades sent" + (f"; {status(sent)}" if status else ""))
                time.sleep(max(0.0, min(0.01, t0 + (len(sent.windows) + 1) / self.rate - time.monotonic())))
            self._beat(sent, covered_from)  # the last coverage, as on a stop
            self.producer.flush()
            sent.seconds = time.time() - start_s
        finally:
            self.sink.close()
        return sent

    def _send_due(self, sent: Sent, due: int) -> None:
        for symbol in self.trades.pick(due):
            now_ms = int(time.time() * 1000)
            value = self.trades.value(symbol, now_ms)
            index = len(sent.windows)
            sent.acks.append(None)
            sent.windows.append((symbol, now_ms // WINDOW_MS * WINDOW_MS))
            self.producer.send(self.topic, key=symbol.encode(), value=value).add_callback(
                functools.partial(sent.trade_acked, index))

    def _beat(self, sent: Sent, covered_from: int) -> None:
        self.producer.flush()  # a heartbeat promises that every trade before it is in Kafka
        t = int(time.time() * 1000) - self.lag_ms
        for symbol in self.trades.symbols:
            key, value = messages.encode_heartbeat(messages.Heartbeat(symbol, covered_from, t))
            self.producer.send(self.topic, key=key, value=value).add_callback(
                functools.partial(sent.heartbeat_acked, symbol, t))

