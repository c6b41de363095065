"""Getting trades into Kafka: the publisher that live mode and replays share.

    live:     poller.poll(Binance)                            -> publish -> Kafka
    replay:   merge(cassette polls, archive rows) by time     -> publish -> Kafka

Nothing is lost silently: Binance's invalid records, malformed records, gaps in agg ids and trades skipped
because Kafka already has them are all counted (``Counters``) and the reasons logged.
"""

from __future__ import annotations

import heapq
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal

from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat
from pipeline.core.ports import TradeSink
from pipeline.core.trades import Sequencer, Trade, invalid_reason
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Item = Trade | Heartbeat
STOP_CHECK_S = 0.1  # how often a paced wait looks at the stop flag


def admit(trades: Iterable[Trade], sequencer: Sequencer, counters: Counters) -> Iterator[Trade]:
    """Valid, new trades only; invalid ones, repeats and gaps are counted on the way."""
    for trade in trades:
        new, gap = sequencer.observe(trade)  # an invalid record still occupies its agg id: no false gap
        if not new:
            counters.duplicates += 1
            continue
        if gap is not None:
            counters.gaps += 1
            counters.missing_ids += gap.size
            log.warning("%s: agg ids %d..%d never arrived (%d missing)", gap.symbol, gap.first_missing,
                        gap.last_missing, gap.size)
        reason = invalid_reason(trade)
        if reason is not None:
            counters.invalid += 1
            log.info("%s agg id %d excluded: %s", trade.symbol, trade.agg_id, reason)
            continue
        yield trade


def time_order(item: Item) -> tuple[int, int]:
    """Sort key: event time; a heartbeat at T sorts before trades at T (it speaks of times before T)."""
    if isinstance(item, Heartbeat):
        return (item.complete_before_ms, 0)
    return (item.event_time_ms, 1)


def merge_by_time(sources: Iterable[Iterable[Item]]) -> Iterator[Item]:
    """Merge sources that are each in ``time_order``."""
    return heapq.merge(*sources, key=time_order)


class Pacer:
    """``--speed``: publish at N x the pace the trades happened (``None``: as fast as possible)."""

    def __init__(self, speed: float | None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._speed, self._sleep, self._clock = speed, sleep, clock
        self._origin: tuple[int, float] | None = None

    @property
    def paced(self) -> bool:
        return self._speed is not None

    def wait(self, event_time_ms: int, stop: Callable[[], bool] | None = None) -> None:
        """Sleep until ``event_time_ms`` is due at the pace. With ``stop`` (the flag a signal sets), the sleep is
        cut into steps of ``STOP_CHECK_S`` and ends once it is set: at 0.001x, one second of trades takes 17 min."""
        if self._speed is None:
            return
        if self._origin is None:
            self._origin = (event_time_ms, self._clock())
            return
        due = self._origin[1] + (event_time_ms - self._origin[0]) / 1000 / self._speed
        step = math.inf if stop is None else STOP_CHECK_S
        while (delay := due - self._clock()) > 0 and not (stop is not None and stop()):
            self._sleep(min(delay, step))


def parse_speed(raw: str) -> float | None:
    """``max`` -> None; ``1x`` / ``10x`` / ``0.5x`` -> the factor."""
    text = raw.strip().lower()
    if text == "max":
        return None
    try:
        factor = Decimal(text.removesuffix("x"))
    except ArithmeticError as exc:
        raise ConfigError(f"--speed must be max, 1x or Nx (e.g. 60x), got {raw!r}") from exc
    if not text.endswith("x") or not factor.is_finite() or not Decimal("0.001") <= factor <= 1_000_000:
        raise ConfigError(f"--speed must be max, 1x or Nx with N from 0.001 to 1000000 (e.g. 60x), got {raw!r}")
    return float(factor)


class Progress:
    """A one-line progress display with the publish rate, on stderr."""

    def __init__(self, counters: Counters, every_s: float = 0.5, detail: Callable[[], str] | None = None,
                 quiet_every_s: float = 5.0) -> None:
        self._counters, self._detail = counters, detail
        self._tty = sys.stderr.isatty()
        self._every_s = every_s if self._tty else quiet_every_s
        self._start = self._last = time.monotonic()

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        self._last = now
        rate = self._counters.published / max(now - self._start, 1e-9)
        line = (f"published {self._counters.published:,} trades ({rate:,.0f}/s), invalid {self._counters.invalid},"
                f" gaps {self._counters.gaps}, exchange errors {self._counters.exchange_errors}")
        if self._detail is not None:
            line += f"; {self._detail()}"
        print(f"\r{line}" if self._tty else line, end="" if self._tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> float:
        elapsed = time.monotonic() - self._start
        if self._tty:
            print(file=sys.stderr)
        return elapsed


def publish(items: Iterable[Item], sink: TradeSink, sequencer: Sequencer, counters: Counters, *,
            pacer: Pacer | None = None, progress: Progress | None = None, stop: Callable[[], bool] = lambda: False,
            batch_size: int = 5000) -> None:
    """Send admitted trades and heartbeats; count a trade as published only once Kafka acknowledged it, and send
    a heartbeat only once every trade before it was acknowledged (it promises they are in Kafka)."""
    pending = 0
    last_confirm = time.monotonic()

    def confirm() -> None:
        nonlocal pending, last_confirm
        sink.flush()
        counters.published += pending
        pending = 0
        last_confirm = time.monotonic()
        if progress:
            progress.tick()

    for item in _admit_items(items, sequencer, counters):
        if isinstance(item, Heartbeat):
            confirm()
            sink.send_heartbeat(item)
            sink.flush()
            counters.heartbeats += 1
        else:
            if pacer:
                pacer.wait(item.event_time_ms, stop)
            sink.send_trade(item)
            pending += 1
            if pending >= batch_size or (pacer is not None and pacer.paced and time.monotonic() - last_confirm > 0.2):
                confirm()
        if stop():
            break
    confirm()
    if progress:
        progress.tick(force=True)


def _admit_items(items: Iterable[Item], sequencer: Sequencer, counters: Counters) -> Iterator[Item]:
    for item in items:
        if isinstance(item, Heartbeat):
            yield item
        else:
            yield from admit([item], sequencer, counters)
