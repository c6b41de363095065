"""The producer's logic with in-memory adapters: admission, counting, confirmation, pacing, polling."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline import producer
from pipeline.adapters.binance import ExchangeUnavailable, Page, RateLimited
from pipeline.adapters.memory import InMemorySink
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Sequencer, Trade
from pipeline.errors import ConfigError, ExchangeError, ServiceError


def trade(agg_id: int, time_ms: int = 1_000, symbol: str = "BTCUSDT", price: str = "1") -> Trade:
    return Trade(symbol, agg_id, Decimal(price), Decimal("1"), agg_id, agg_id, time_ms, False, True)


def test_publish_counts_only_acknowledged_valid_new_trades() -> None:
    sink, counters = InMemorySink(), producer.Counters()
    items = [trade(1), trade(2), trade(3, price="0"), trade(2), trade(6), Heartbeat(5_000), trade(7)]
    producer.publish(items, sink, Sequencer(), counters, batch_size=2)
    assert [t.agg_id for t in sink.trades] == [1, 2, 6, 7]
    assert sink.acknowledged[3] == Heartbeat(5_000)  # after every trade before it was acknowledged
    assert (counters.published, counters.invalid, counters.duplicates) == (4, 1, 1)
    assert (counters.gaps, counters.missing_ids, counters.heartbeats) == (1, 2, 1)  # 4..5 missing; 3 arrived


def test_publish_resumes_after_what_kafka_has() -> None:
    sink, counters = InMemorySink(), producer.Counters()
    producer.publish([trade(i) for i in range(1, 11)], sink, Sequencer({"BTCUSDT": 7}), counters)
    assert [t.agg_id for t in sink.trades] == [8, 9, 10]
    assert counters.duplicates == 7 and counters.gaps == 0


def test_a_failed_flush_is_raised_and_not_counted() -> None:
    sink, counters = InMemorySink(), producer.Counters()
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


@pytest.mark.parametrize("raw", ["fast", "0x", "-2x", "10", "x", "nanx"])
def test_bad_speed(raw: str) -> None:
    with pytest.raises(ConfigError):
        producer.parse_speed(raw)


class ScriptedClient:
    """Answers agg_trades calls from a script of pages or exceptions, recording the calls."""

    def __init__(self, script: list[Page | Exception]) -> None:
        self.script, self.calls = script, []  # type: ignore[var-annotated]

    def agg_trades(self, symbol: str, **kwargs: object) -> Page:
        self.calls.append((symbol, kwargs))
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def rec(agg_id: int, time_ms: int) -> dict[str, object]:
    return {"a": agg_id, "p": "1.5", "q": "2", "f": agg_id, "l": agg_id, "T": time_ms, "m": True, "M": True}


def test_poll_pages_by_from_id_waits_out_limits_and_heartbeats_when_caught_up() -> None:
    client = ScriptedClient([
        Page([rec(41, 90_000)], 100_000, 4),  # newest trade: start after it
        Page([rec(42, 101_500), rec(43, 101_600), {"a": 44}], 102_000, 8),  # one malformed record
        RateLimited("429", 7.0, banned=False),
        ExchangeUnavailable("503"),
        Page([], 109_000, 4),
    ])
    slept: list[float] = []
    counters = producer.Counters()
    items = list(producer.poll(client, ["BTCUSDT"], {}, counters, sleep=slept.append,  # type: ignore[arg-type]
                               stop=lambda: not client.script))
    assert [c[1] for c in client.calls] == [{"limit": 1}, {"from_id": 42}, {"from_id": 45}, {"from_id": 45},
                                            {"from_id": 45}]
    lag = producer.HEARTBEAT_LAG_MS
    assert [getattr(i, "agg_id", i) for i in items] == [Heartbeat(100_000 - lag), 42, 43, Heartbeat(102_000 - lag),
                                                        Heartbeat(109_000 - lag)]
    assert 7.0 in slept  # Retry-After honoured before the next request
    assert counters.rejected == 1 and counters.exchange_errors == 2


def test_poll_stops_on_a_non_retryable_binance_error() -> None:
    client = ScriptedClient([ExchangeError("Invalid symbol. (code -1121)")])
    with pytest.raises(ExchangeError, match="Invalid symbol"):
        list(producer.poll(client, ["NOPE"], {}, producer.Counters(), sleep=lambda _s: None))  # type: ignore[arg-type]


def test_merge_by_time_puts_heartbeats_before_trades_at_the_same_time() -> None:
    merged = list(producer.merge_by_time([[trade(1, 1_000), Heartbeat(2_000)],
                                          [trade(5, 2_000, "ETHUSDT"), trade(6, 2_500, "ETHUSDT")]]))
    assert merged == [trade(1, 1_000), Heartbeat(2_000), trade(5, 2_000, "ETHUSDT"), trade(6, 2_500, "ETHUSDT")]


def test_a_first_start_at_a_given_time_asks_from_that_time_then_pages_by_id() -> None:
    client = ScriptedClient([Page([rec(7, 1_000_500), rec(8, 1_000_900)], 1_001_000, 4),
                             Page([], 1_002_000, 4)])
    items = list(producer.poll(client, ["BTCUSDT"], {}, producer.Counters(), start_time_ms=1_000_000,  # type: ignore[arg-type]
                               sleep=lambda _s: None, stop=lambda: not client.script))
    assert [c[1] for c in client.calls] == [{"start_time_ms": 1_000_000}, {"from_id": 9}]
    assert [getattr(i, "agg_id", None) for i in items][:2] == [7, 8]


def test_replay_mode_thins_heartbeats_but_keeps_the_last() -> None:
    sink, counters = InMemorySink(), producer.Counters()
    items = [trade(1), Heartbeat(2_000), Heartbeat(3_000), trade(2, 3_500), Heartbeat(4_000), Heartbeat(5_000)]
    producer.publish(items, sink, Sequencer(), counters, heartbeats="progress")
    assert [getattr(i, "complete_before_ms", None) for i in sink.acknowledged] == [None, 2_000, None, 4_000, 5_000]

    again = InMemorySink()  # everything already published: only the final heartbeat goes out
    producer.publish(items, again, Sequencer({"BTCUSDT": 2}), producer.Counters(), heartbeats="progress")
    assert again.acknowledged == [Heartbeat(5_000)]


def test_exchange_backoff_grows_with_consecutive_failures_and_resets_after_an_answer() -> None:
    client = ScriptedClient([ExchangeUnavailable("503"), ExchangeUnavailable("503"), Page([], 200_000, 4),
                             ExchangeUnavailable("503")])
    slept: list[float] = []
    list(producer.poll(client, ["BTCUSDT"], {"BTCUSDT": 1}, producer.Counters(), poll_interval_s=1.0,  # type: ignore[arg-type]
                       sleep=slept.append, stop=lambda: not client.script))
    assert slept == [2.0, 4.0, 1.0, 2.0]
