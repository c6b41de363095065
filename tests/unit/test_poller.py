"""The live poller against an in-memory exchange on a virtual clock: catch-up, coverage, faults, resume."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import poller
from pipeline.adapters.memory import InMemoryExchange
from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat, ResumePoint
from pipeline.core.trades import Trade
from pipeline.errors import BadAnswer, ExchangeError, ExchangeUnavailable, RateLimited

T0 = 1_767_268_800_000  # 2026-01-01T12:00:00Z
LAG_MS = 5_000


def records(rate_per_s: float, minutes: int, seed: int, first_id: int = 1_000) -> list[dict[str, Any]]:
    rng, t, out = random.Random(seed), T0 - 30_000, []
    while True:
        t += max(0, int(rng.expovariate(rate_per_s) * 1000))
        if t >= T0 + minutes * 60_000:
            return out
        out.append({"a": first_id + len(out), "p": "1.50000000", "q": "2.00000000", "f": len(out),
                    "l": len(out), "T": t, "m": True, "M": True})


def run(exchange: InMemoryExchange, clock: poller.VirtualClock, states: dict[str, poller.SymbolState],
        until_s: float, counters: Counters | None = None) -> list[Trade | Heartbeat]:
    return list(poller.poll(exchange, states, counters or Counters(), lag_ms=LAG_MS, poll_interval_s=1.0,
                            clock=clock, sleep=clock.sleep, stop=lambda: clock() >= until_s))


def assert_coverage_honest(items: list[Trade | Heartbeat], served: dict[str, list[dict[str, Any]]]) -> None:
    """Every heartbeat (s, from, T) comes after every trade of s with from <= time < T."""
    published: dict[str, set[int]] = {s: set() for s in served}
    for item in items:
        if isinstance(item, Trade):
            published[item.symbol].add(item.agg_id)
            continue
        due = {r["a"] for r in served[item.symbol] if item.covered_from_ms <= r["T"] < item.complete_before_ms}
        assert due <= published[item.symbol], (item, sorted(due - published[item.symbol])[:5])


def test_a_catch_up_of_skewed_symbols_publishes_everything_and_only_honest_coverage() -> None:
    served = {"BTCUSDT": records(25, 12, seed=1), "ADAUSDT": records(0.4, 12, seed=2)}  # 62x apart
    clock = poller.VirtualClock((T0 + 12 * 60_000) / 1000)  # started 12 minutes late: a backlog
    exchange = InMemoryExchange(served, clock)
    states = poller.start_states(served, {}, T0 + 17_000)  # mid-minute: starts at 12:00:00
    items = run(exchange, clock, states, clock() + 30)
    trades = [i for i in items if isinstance(i, Trade)]
    for symbol, recs in served.items():
        assert [t.agg_id for t in trades if t.symbol == symbol] == [r["a"] for r in recs if r["T"] >= T0]
    assert_coverage_honest(items, served)
    # BTCUSDT needs many pages; ADAUSDT is asked again only every poll interval while BTCUSDT catches up.
    asked = [c[1] for c in exchange.calls]
    assert asked.count("BTCUSDT") >= 18 and asked.count("ADAUSDT") <= 32
    last = {i.symbol: i for i in items if isinstance(i, Heartbeat)}
    assert all(h.covered_from_ms == T0 for h in last.values())
    assert all(h.complete_before_ms >= T0 + 12 * 60_000 for h in last.values())  # every minute can close


@settings(max_examples=40)
@given(faults=st.lists(st.sampled_from(["429", "418", "bad", "down"]), max_size=8), seed=st.integers(0, 10**6))
def test_faults_delay_but_never_break_coverage(faults: list[str], seed: int) -> None:
    served = {"BTCUSDT": records(20, 4, seed=seed), "ETHUSDT": records(2, 4, seed=seed + 1),
              "ADAUSDT": records(0.3, 4, seed=seed + 2)}
    clock = poller.VirtualClock((T0 + 4 * 60_000) / 1000)
    made = {"429": lambda: RateLimited("429", 7.0, banned=False), "418": lambda: RateLimited("418", 60.0, True),
            "bad": lambda: BadAnswer("<html>"), "down": lambda: ExchangeUnavailable("503")}
    exchange = InMemoryExchange(served, clock, [made[f]() for f in faults])
    counters = Counters()
    items = run(exchange, clock, poller.start_states(served, {}, T0), clock() + 400, counters)
    assert_coverage_honest(items, served)
    trades = [i for i in items if isinstance(i, Trade)]
    assert sorted((t.symbol, t.agg_id) for t in trades) == sorted(
        (s, r["a"]) for s, recs in served.items() for r in recs if r["T"] >= T0)
    assert counters.exchange_errors == len(faults)


def test_no_request_while_a_rate_limit_runs() -> None:
    served = {"BTCUSDT": records(1, 1, seed=3)}
    clock = poller.VirtualClock((T0 + 60_000) / 1000)
    exchange = InMemoryExchange(served, clock, [RateLimited("429", 30.0, banned=False)])
    run(exchange, clock, poller.start_states(served, {}, T0), clock() + 40)
    times = [c[0] for c in exchange.calls]
    assert times[1] - times[0] >= 30.0


def test_no_request_while_a_5xx_retry_after_runs() -> None:
    """A 503 with Retry-After (the session returns it unretried): the poller waits it out, not just its backoff."""
    served = {"BTCUSDT": records(1, 1, seed=3)}
    clock = poller.VirtualClock((T0 + 60_000) / 1000)
    exchange = InMemoryExchange(served, clock, [ExchangeUnavailable("503", retry_after_s=45.0)])
    counters = Counters()
    run(exchange, clock, poller.start_states(served, {}, T0), clock() + 50, counters)
    times = [c[0] for c in exchange.calls]
    assert times[1] - times[0] >= 45.0 and counters.exchange_errors == 1


def test_an_invalid_symbol_is_raised() -> None:
    clock = poller.VirtualClock(T0 / 1000)

    class Refusing(InMemoryExchange):
        def agg_trades(self, symbol: str, **kwargs: Any) -> Any:
            raise ExchangeError("Invalid symbol. (code -1121, HTTP 400)")

    with pytest.raises(ExchangeError, match="Invalid symbol"):
        run(Refusing({}, clock), clock, poller.start_states(["NOPE"], {}, T0), clock() + 5)


def test_a_restart_resumes_after_kafka_and_continues_the_coverage() -> None:
    served = {"BTCUSDT": records(5, 3, seed=4)}
    last = served["BTCUSDT"][200]
    resume = {"BTCUSDT": ResumePoint(last["a"], last["T"], complete_before_ms=last["T"] - 3_000)}
    states = poller.start_states(["BTCUSDT", "ETHUSDT"], resume, T0 + 170_000)
    assert (states["BTCUSDT"].cursor, states["BTCUSDT"].covered_from_ms) == (last["a"] + 1, last["T"] - 3_000)
    assert (states["ETHUSDT"].cursor, states["ETHUSDT"].covered_from_ms) == (None, T0 + 120_000)  # a new symbol
    no_heartbeat = poller.start_states(["BTCUSDT"], {"BTCUSDT": ResumePoint(last["a"], last["T"])}, T0)
    assert no_heartbeat["BTCUSDT"].covered_from_ms == last["T"]
    # Only a heartbeat in the scanned tail (a quiet symbol): coverage goes on from its T, the trades by time.
    only = poller.start_states(["ADAUSDT"], {"ADAUSDT": ResumePoint(None, None, T0 + 61_234)}, T0 + 170_000)
    assert (only["ADAUSDT"].cursor, only["ADAUSDT"].covered_from_ms) == (None, T0 + 61_234)


def test_resume_points_are_checked_against_the_newest_id() -> None:
    served = {"BTCUSDT": records(5, 1, seed=5, first_id=3_500_000_000)}
    exchange = InMemoryExchange(served, poller.VirtualClock((T0 + 60_000) / 1000))
    newest = served["BTCUSDT"][-1]["a"]
    assert poller.check_resume(exchange, {"BTCUSDT": ResumePoint(newest - 10, T0)}, 1000) == {}
    above = poller.check_resume(exchange, {"BTCUSDT": ResumePoint(newest + 5, T0)}, 1000)
    assert "above Binance's newest" in above["BTCUSDT"]
    far = poller.check_resume(exchange, {"BTCUSDT": ResumePoint(1_000_042, T0)}, 1000)  # a cassette's ids
    assert "behind Binance's newest" in far["BTCUSDT"]


def test_a_clean_stop_leaves_the_latest_coverage() -> None:
    state = poller.SymbolState("BTCUSDT", T0, cursor=5, complete_before_ms=T0 + 30_000, announced_ms=T0 + 10_000)
    assert poller.final_heartbeats([state]) == [Heartbeat("BTCUSDT", T0, T0 + 30_000)]
    assert "BTCUSDT 30.0s" in poller.lag_report([state], T0 + 60_000)


def test_the_resume_check_waits_out_faults_like_polling_does() -> None:
    served = {"BTCUSDT": records(5, 1, seed=6)}
    clock = poller.VirtualClock((T0 + 60_000) / 1000)
    exchange = InMemoryExchange(served, clock, [RateLimited("429", 2.0, banned=False), BadAnswer("<html>")])
    counters = Counters()
    newest = served["BTCUSDT"][-1]["a"]
    assert poller.check_resume(exchange, {"BTCUSDT": ResumePoint(newest, T0)}, 10, counters, sleep=clock.sleep) == {}
    assert counters.exchange_errors == 2 and len(exchange.calls) == 3


@settings(max_examples=60)
@given(rate=st.sampled_from([0.05, 1.0, 40.0]), offset_ms=st.integers(-60_000, 200_000), seed=st.integers(0, 999))
def test_the_first_id_at_a_time_whatever_the_density(rate: float, offset_ms: int, seed: int) -> None:
    served = {"BTCUSDT": records(rate, 3, seed=seed, first_id=3_500_000_000)}
    clock = poller.VirtualClock((T0 + 3 * 60_000) / 1000)
    exchange = InMemoryExchange(served, clock)
    at = T0 + offset_ms
    later = [r["a"] for r in served["BTCUSDT"] if r["T"] >= at]
    expected = later[0] if later else (served["BTCUSDT"][-1]["a"] + 1 if served["BTCUSDT"] else None)
    assert poller.first_id_at(exchange, "BTCUSDT", at) == expected
    assert len(exchange.calls) <= 2 + 33  # one range, the newest, then a binary search at most


def test_a_symbol_without_any_trade_is_asked_again_later() -> None:
    clock = poller.VirtualClock(T0 / 1000)
    assert poller.first_id_at(InMemoryExchange({"NEWUSDT": []}, clock), "NEWUSDT", T0) is None


class _Unreachable:
    """A base URL that never gives a usable answer (wrong host, a proxy's HTML page): fails every request."""

    def __init__(self, exc: Exception) -> None:
        self.exc, self.requests = exc, 0

    def agg_trades(self, symbol: str, **_: object) -> Any:
        self.requests += 1
        raise self.exc


@pytest.mark.parametrize("exc", [ExchangeUnavailable("GET /api/v3/aggTrades failed: ConnectionError: DNS"),
                                 BadAnswer("not JSON: <html>")])
def test_an_exchange_never_reached_since_start_is_a_configuration_error(exc: Exception) -> None:
    clock, source = poller.VirtualClock(1_000.0), _Unreachable(exc)
    states = poller.start_states(["BTCUSDT"], {}, T0)
    with pytest.raises(poller.NeverReached, match="check --base-url"):
        run(source, clock, states, until_s=10_000.0)  # type: ignore[arg-type]
    assert poller.NEVER_REACHED_S <= clock() - 1_000.0 < poller.NEVER_REACHED_S + poller.MAX_BACKOFF_S + 1
    with pytest.raises(poller.NeverReached):  # the resume check gives up the same way
        poller.check_resume(source, {"BTCUSDT": ResumePoint(5, T0)}, 10, Counters(),  # type: ignore[arg-type]
                            clock.sleep, clock=clock)


def test_once_reached_an_outage_is_retried_however_long_it_lasts() -> None:
    clock = poller.VirtualClock(T0 / 1000)
    exchange = InMemoryExchange({"BTCUSDT": records(2.0, 3, seed=5)}, clock)
    counters = Counters()
    states = poller.start_states(["BTCUSDT"], {}, T0)
    run(exchange, clock, states, until_s=T0 / 1000 + 30, counters=counters)
    assert counters.answered
    outage = _Unreachable(ExchangeUnavailable("GET failed: ConnectionError: Temporary failure in name resolution"))
    run(outage, clock, states, until_s=clock() + 3 * poller.NEVER_REACHED_S, counters=counters)  # type: ignore[arg-type]
    assert outage.requests > 10  # still asking, never raised


def _record(agg_id: int, t_ms: int) -> dict[str, Any]:
    return {"a": agg_id, "p": "10.00000000", "q": "1.00000000", "f": agg_id * 2, "l": agg_id * 2, "T": t_ms,
            "m": False, "M": True}


def test_trades_between_walks_pages_past_malformed_records_and_stops_at_the_range_end() -> None:
    """Three pages of 1,000 (a malformed record on the first one), ids one per 100 ms: exactly the range's trades
    come back, the malformed one is counted, and the walk never stops early because a record did not parse."""
    start = 1_767_268_800_000
    records = [_record(i, start + i * 100) for i in range(1, 3_500)]
    records[500]["p"] = "not a price"
    exchange = InMemoryExchange({"BTCUSDT": records}, clock=lambda: (start + 3_600_000) / 1000)
    counters = Counters()
    got = list(poller.trades_between(exchange, "BTCUSDT", start + 1_000, start + 250_000, counters))
    assert [t.agg_id for t in got] == [i for i in range(10, 2_500) if i != 501]
    assert counters.rejected == 1


def test_trades_between_refuses_a_full_page_with_no_usable_id() -> None:
    start = 1_767_268_800_000
    exchange = InMemoryExchange({"BTCUSDT": [_record(i, start + i) for i in range(1, 2_000)]},
                                clock=lambda: (start + 60_000) / 1000)
    real = exchange.agg_trades

    def garbage(symbol: str, **kwargs: Any) -> Any:
        page = real(symbol, **kwargs)
        if kwargs.get("from_id") is not None:
            page = dataclasses.replace(page, records=[{"x": 1}] * 1_000)
        return page

    exchange.agg_trades = garbage  # type: ignore[method-assign]
    with pytest.raises(BadAnswer, match="without one usable agg id"):
        list(poller.trades_between(exchange, "BTCUSDT", start, start + 60_000, Counters()))


def test_a_full_page_without_one_usable_id_is_waited_out_not_asked_again_at_once() -> None:
    """A page of 1,000 records none of which has an id moves no cursor: asking again at once would loop forever."""
    clock = poller.VirtualClock(T0 / 1000)
    exchange = InMemoryExchange({"BTCUSDT": records(2.0, 3, seed=3)}, clock)
    real, asked = exchange.agg_trades, []

    def garbage(symbol: str, **kwargs: Any) -> Any:
        page = real(symbol, **kwargs)
        if kwargs.get("from_id") is not None:
            asked.append(clock())
            page = dataclasses.replace(page, records=[{"x": 1}] * 1_000)
        return page

    exchange.agg_trades = garbage  # type: ignore[method-assign]
    counters = Counters()
    states = poller.start_states(["BTCUSDT"], {}, T0)
    items = list(poller.poll(exchange, states, counters, lag_ms=LAG_MS, clock=clock, sleep=clock.sleep,
                             stop=lambda: clock() >= T0 / 1000 + 300 or len(asked) > 1_000))
    assert 5 < len(asked) < 30  # backoff 2, 4, 8, 16, then 30 s: about 14 requests in 300 s
    assert counters.exchange_errors == len(asked)
    assert not [i for i in items if isinstance(i, Heartbeat)]


def test_without_a_date_header_a_fast_local_clock_declares_nothing_complete() -> None:
    """The exchange's answers carry no Date and the producer's clock runs 4 minutes ahead (within the 5 minutes of
    skew the job tolerates): coverage may only reach the newest trade the exchange sent."""
    exchange_clock = poller.VirtualClock(T0 / 1000)
    served = {"BTCUSDT": records(2.0, 6, seed=11)}
    exchange = InMemoryExchange(served, exchange_clock)
    real = exchange.agg_trades

    def undated(symbol: str, **kwargs: Any) -> Any:
        return dataclasses.replace(real(symbol, **kwargs), server_time_ms=None)

    exchange.agg_trades = undated  # type: ignore[method-assign]
    fast = poller.VirtualClock(T0 / 1000 + 240)  # the producer's clock; the exchange's moves with it

    def sleep(seconds: float) -> None:
        fast.sleep(seconds)
        exchange_clock.sleep(seconds)

    counters = Counters()
    items = list(poller.poll(exchange, poller.start_states(["BTCUSDT"], {}, T0), counters, lag_ms=LAG_MS,
                             clock=fast, sleep=sleep, stop=lambda: exchange_clock() >= T0 / 1000 + 200))
    beats = [i for i in items if isinstance(i, Heartbeat)]
    assert beats and counters.undated > 0
    assert_coverage_honest(items, served)
    assert max(b.complete_before_ms for b in beats) <= exchange_clock() * 1000
