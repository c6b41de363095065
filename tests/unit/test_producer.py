"""The producer's logic with in-memory adapters: admission, counting, confirmation, pacing, polling."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from pipeline import producer
from pipeline.adapters.memory import InMemorySink
from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Sequencer, Trade
from pipeline.errors import ConfigError, ServiceError


def trade(agg_id: int, time_ms: int = 1_000, symbol: str = "BTCUSDT", price: str = "1") -> Trade:
    return Trade(symbol, agg_id, Decimal(price), Decimal("1"), agg_id, agg_id, time_ms, False, True)


def test_publish_counts_only_acknowledged_valid_new_trades() -> None:
    sink, counters = InMemorySink(), Counters()
    beat = Heartbeat("BTCUSDT", 0, 5_000)
    items = [trade(1), trade(2), trade(3, price="0"), trade(2), trade(6), beat, trade(7)]
    producer.publish(items, sink, Sequencer(), counters, batch_size=2)
    assert [t.agg_id for t in sink.trades] == [1, 2, 6, 7]
    assert sink.acknowledged[3] == beat  # after every trade before it was acknowledged
    assert (counters.published, counters.invalid, counters.duplicates) == (4, 1, 1)
    assert (counters.gaps, counters.missing_ids, counters.heartbeats) == (1, 2, 1)  # 4..5 missing; 3 arrived


def test_publish_resumes_after_what_kafka_has() -> None:
    sink, counters = InMemorySink(), Counters()
    producer.publish([trade(i) for i in range(1, 11)], sink, Sequencer({"BTCUSDT": 7}), counters)
    assert [t.agg_id for t in sink.trades] == [8, 9, 10]
    assert counters.duplicates == 7 and counters.gaps == 0


def test_a_failed_flush_is_raised_and_not_counted() -> None:
    sink, counters = InMemorySink(), Counters()
    sink.fail_with = ServiceError("broker gone")
    with pytest.raises(ServiceError):
        producer.publish([trade(1), trade(2)], sink, Sequencer(), counters)
    assert counters.published == 0


def test_pacer_spaces_events_by_speed() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        now[0] += s

    pacer = producer.Pacer(10.0, sleep=sleep, clock=lambda: now[0])
    for t in (0, 10_000, 10_000, 30_000):
        pacer.wait(t)
    assert slept == [1.0, 2.0]  # 10 s of events at 10x = 1 s; then 20 s = 2 s
    producer.Pacer(None, sleep=sleep).wait(99)  # max: never sleeps
    assert slept == [1.0, 2.0]


@pytest.mark.parametrize(("raw", "speed"), [("max", None), ("1x", 1.0), ("60x", 60.0), ("0.5x", 0.5)])
def test_parse_speed(raw: str, speed: float | None) -> None:
    assert producer.parse_speed(raw) == speed


@pytest.mark.parametrize("raw", ["fast", "0x", "-2x", "10", "x", "nanx", "1e-400x", "2000000x"])
def test_bad_speed(raw: str) -> None:
    with pytest.raises(ConfigError):
        producer.parse_speed(raw)


def test_merge_by_time_puts_heartbeats_before_trades_at_the_same_time() -> None:
    beat = Heartbeat("BTCUSDT", 0, 2_000)
    merged = list(producer.merge_by_time([[trade(1, 1_000), beat],
                                          [trade(5, 2_000, "ETHUSDT"), trade(6, 2_500, "ETHUSDT")]]))
    assert merged == [trade(1, 1_000), beat, trade(5, 2_000, "ETHUSDT"), trade(6, 2_500, "ETHUSDT")]


def test_a_stop_cuts_a_long_pace_wait() -> None:
    """At 0.001x, 10 ms of trades take 10 s; a stop (the flag a signal sets) after 0.2 s ends the wait."""
    stopping = threading.Event()
    pacer = producer.Pacer(0.001)
    pacer.wait(0, stopping.is_set)
    threading.Timer(0.2, stopping.set).start()
    started = time.monotonic()
    pacer.wait(10, stopping.is_set)
    assert time.monotonic() - started < 5


def test_a_stop_cuts_a_paced_publish() -> None:
    """What a replay does: ``publish`` with a pacer and the stop flag the CLI's signal handler sets."""
    stopping, sink, counters = threading.Event(), InMemorySink(), Counters()
    threading.Timer(0.2, stopping.set).start()
    started = time.monotonic()
    producer.publish([trade(1, 0), trade(2, 10), trade(3, 20)], sink, Sequencer(), counters,
                     pacer=producer.Pacer(0.001), stop=stopping.is_set)
    assert time.monotonic() - started < 5
    assert counters.published == len(sink.trades) >= 1  # what was sent is confirmed
