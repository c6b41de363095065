"""The simulated Binance server (tests/sim_binance.py) through the project's real client, over real HTTP."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests

from pipeline.adapters.binance import BinanceClient, make_session
from pipeline.core.trades import Trade, invalid_reason, parse_rest, parse_rest_page
from pipeline.errors import BadAnswer, ExchangeError, ExchangeUnavailable, RateLimited
from tests.sim_binance import SimBinance, SimMarket

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_268_815.0  # 2026-01-01T12:00:15Z: 45 s before the next clock minute
HISTORY_MS = 10 * 60_000
BTC = SimMarket("BTCUSDT", 10.0, Decimal("97000.00"), Decimal("0.01"), Decimal("0.00001"), 20000, 1_000_000, 5_000_000)
ETH = SimMarket("ETHUSDT", 0.2, Decimal("3400.00"), Decimal("0.01"), Decimal("0.0001"), 30000, 7_000, 90_000)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sim(clock: FakeClock, seed: int = 7, history_start_ms: int | None = None, **kwargs: object) -> SimBinance:
    start_ms = int(clock.now * 1000) - HISTORY_MS if history_start_ms is None else history_start_ms
    return SimBinance([BTC, ETH], seed=seed, history_start_ms=start_ms, clock=clock, **kwargs)  # type: ignore[arg-type]


def make_client(base_url: str, **kwargs: object) -> BinanceClient:
    return BinanceClient(session=make_session(retries=0), base_url=base_url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimBinance]:
    with make_sim(clock) as running:
        yield running


def page_all(client: BinanceClient, symbol: str, from_id: int) -> list[Trade]:
    trades: list[Trade] = []
    while True:
        page = client.agg_trades(symbol, from_id=from_id)
        trades += parse_rest_page(symbol, page.records)
        if len(page.records) < 1000:
            return trades
        from_id = trades[-1].agg_id + 1


def test_paging_by_from_id_returns_consecutive_ids_and_the_served_trades(sim: SimBinance, clock: FakeClock) -> None:
    client = make_client(sim.base_url, clock=clock)
    trades = page_all(client, "BTCUSDT", BTC.first_agg_id)
    assert len(trades) > 3000  # several full pages
    assert [t.agg_id for t in trades] == list(range(BTC.first_agg_id, BTC.first_agg_id + len(trades)))
    assert trades == sim.served_trades("BTCUSDT")
    times = [t.event_time_ms for t in trades]
    assert times == sorted(times) and times[0] >= clock.now * 1000 - HISTORY_MS and times[-1] <= clock.now * 1000
    valid = [t for t in trades if invalid_reason(t) is None]
    assert all(t.price % BTC.tick == 0 and t.quantity % BTC.lot == 0 and t.quantity > 0 for t in valid)
    assert any(t.trade_count > 1 for t in valid) and any(t.trade_count == 1 for t in valid)
    assert {t.buyer_is_maker for t in trades} == {True, False} and all(t.best_match for t in trades)
    invalid = [t for t in trades if invalid_reason(t) is not None]
    assert invalid and all((t.first_trade_id, t.last_trade_id, t.price) == (-1, -1, 0) for t in invalid)
    ids = [(t.first_trade_id, t.last_trade_id) for t in valid]
    assert all(b[0] == a[1] + 1 for a, b in zip(ids, ids[1:], strict=False))  # exchange trade ids consecutive too
    # Past the newest trade: an empty page, not an error.
    assert client.agg_trades("BTCUSDT", from_id=trades[-1].agg_id + 1).records == []


def test_a_time_range_answers_its_last_trades(sim: SimBinance, clock: FakeClock) -> None:
    client = make_client(sim.base_url, clock=clock)
    every = page_all(client, "ETHUSDT", 0)  # fromId below the first id: from the start
    assert every[0].agg_id == ETH.first_agg_id
    for probe in (every[5].event_time_ms, every[5].event_time_ms + 1, every[-1].event_time_ms):
        end = probe + 120_000
        page = client.agg_trades("ETHUSDT", start_time_ms=probe, end_time_ms=end, limit=3)
        expected = [t for t in every if probe <= t.event_time_ms <= end][-3:]  # as Binance: limit from the end
        assert parse_rest_page("ETHUSDT", page.records) == expected


def test_no_cursor_returns_the_newest_trades(sim: SimBinance, clock: FakeClock) -> None:
    client = make_client(sim.base_url, clock=clock)
    newest = client.agg_trades("BTCUSDT", limit=1)
    assert len(newest.records) == 1
    last = sim.served_trades("BTCUSDT")[-1]
    assert parse_rest("BTCUSDT", newest.records[0]) == last
    clock.now += 30
    page = make_client(sim.base_url, clock=clock).agg_trades("BTCUSDT", limit=100)
    served = sim.served_trades("BTCUSDT")
    assert parse_rest_page("BTCUSDT", page.records) == served[-100:] and served[-1].agg_id > last.agg_id


def test_rates_50x_apart_give_proportional_counts(sim: SimBinance, clock: FakeClock) -> None:
    client = make_client(sim.base_url, clock=clock)
    btc, eth = page_all(client, "BTCUSDT", 0), page_all(client, "ETHUSDT", 0)
    assert 6000 - 5 * 6000**0.5 < len(btc) < 6000 + 5 * 6000**0.5  # 10 min x 10/s, within 5 sigma
    assert 120 - 5 * 120**0.5 < len(eth) < 120 + 5 * 120**0.5  # 10 min x 0.2/s
    assert 30 < len(btc) / len(eth) < 80
    assert sim.all_trades() == btc + eth


def test_same_seed_same_trades_however_they_are_read(clock: FakeClock) -> None:
    with make_sim(FakeClock(clock.now)) as at_once:
        whole = page_all(make_client(at_once.base_url), "ETHUSDT", 0)
    stepping = FakeClock(clock.now - 600)
    with make_sim(stepping, history_start_ms=int(clock.now * 1000) - HISTORY_MS) as bit_by_bit:
        bit_by_bit_client = make_client(bit_by_bit.base_url, clock=stepping)
        while stepping.now < clock.now:
            stepping.now = min(clock.now, stepping.now + 37)
            bit_by_bit_client.agg_trades("ETHUSDT", limit=1)
        assert bit_by_bit.served_trades("ETHUSDT") == whole
    with make_sim(FakeClock(clock.now), seed=8) as other:
        assert page_all(make_client(other.base_url), "ETHUSDT", 0) != whole


def test_freeze_quiets_the_market_but_the_server_keeps_answering(sim: SimBinance, clock: FakeClock) -> None:
    frozen_ms = int(clock.now * 1000)
    sim.freeze(frozen_ms)
    clock.now += 120
    client = make_client(sim.base_url, clock=clock)
    trades = page_all(client, "BTCUSDT", 0)
    assert trades and trades[-1].event_time_ms < frozen_ms and trades == sim.served_trades("BTCUSDT")
    quiet = client.agg_trades("BTCUSDT", from_id=trades[-1].agg_id + 1)
    assert quiet.records == [] and quiet.server_time_ms == int(clock.now) * 1000
    assert client.agg_trades("BTCUSDT", start_time_ms=frozen_ms).records == []
    with pytest.raises(ValueError, match="already served"):
        sim.freeze(frozen_ms - 60_000)


def test_weight_header_date_and_the_other_endpoints(sim: SimBinance, clock: FakeClock) -> None:
    client = make_client(sim.base_url, clock=clock)
    assert client.agg_trades("ETHUSDT", limit=5).used_weight == 4
    page = client.agg_trades("ETHUSDT", limit=5)
    assert page.used_weight == 8 and page.server_time_ms == int(clock.now) * 1000
    server_time = requests.get(f"{sim.base_url}/api/v3/time", timeout=5)
    assert server_time.json() == {"serverTime": int(clock.now * 1000)}
    assert server_time.headers["X-MBX-USED-WEIGHT-1M"] == "9"
    assert server_time.headers["Date"] == email.utils.formatdate(clock.now, usegmt=True)
    assert requests.get(f"{sim.base_url}/api/v3/ping", timeout=5).json() == {}
    clock.now += 60  # a new minute: the weight starts over
    assert client.agg_trades("ETHUSDT", limit=5).used_weight == 4
    too_many = requests.get(f"{sim.base_url}/api/v3/aggTrades", params={"symbol": "ETHUSDT", "limit": "1001"},
                            timeout=5)
    assert too_many.status_code == 400 and too_many.json()["code"] == -1100
    assert sim.requests_log[0] == ("/api/v3/aggTrades", {"symbol": "ETHUSDT", "limit": "5"}, 200)
    assert sim.requests_log[-1][2] == 400


def test_invalid_symbol_is_an_exchange_error(sim: SimBinance) -> None:
    with pytest.raises(ExchangeError, match=r"Invalid symbol.*-1121.*HTTP 400") as info:
        make_client(sim.base_url).agg_trades("NOPEUSDT", from_id=1)
    assert not isinstance(info.value, ExchangeUnavailable | RateLimited)


def test_over_the_weight_limit_429_then_418_for_whoever_keeps_sending(clock: FakeClock) -> None:
    with make_sim(clock, weight_limit=20) as sim:
        client = make_client(sim.base_url, clock=clock)
        for _ in range(5):
            client.agg_trades("ETHUSDT", limit=1)  # 5 x 4 = 20: at the limit, not over it
        with pytest.raises(RateLimited) as limited:
            client.agg_trades("ETHUSDT", limit=1)
        assert limited.value.retry_after_s == 45 and not limited.value.banned  # to the next clock minute
        with pytest.raises(RateLimited) as banned:  # another client that ignores the 429
            make_client(sim.base_url, clock=clock).agg_trades("ETHUSDT", limit=1)
        assert banned.value.banned and banned.value.retry_after_s == 90
        clock.now += 60  # the minute is over but the ban is not
        with pytest.raises(RateLimited) as still:
            make_client(sim.base_url, clock=clock).agg_trades("ETHUSDT", limit=1)
        assert still.value.banned and still.value.retry_after_s == 30
        clock.now += 30
        assert make_client(sim.base_url, clock=clock).agg_trades("ETHUSDT", limit=1).used_weight == 4
        assert sim.faults_served == {"limit_429": 1, "ban_418": 2}
        assert [status for _, _, status in sim.requests_log] == [200] * 5 + [429, 418, 418, 200]


def test_injected_429_starts_a_real_wait_and_a_request_inside_it_earns_a_418(sim: SimBinance,
                                                                             clock: FakeClock) -> None:
    sim.inject("429", retry_after_s=7)
    with pytest.raises(RateLimited) as limited:
        make_client(sim.base_url, clock=clock).agg_trades("BTCUSDT", from_id=0)
    assert limited.value.retry_after_s == 7 and not limited.value.banned
    clock.now += 2
    with pytest.raises(RateLimited) as banned:
        make_client(sim.base_url, clock=clock).agg_trades("BTCUSDT", from_id=0)
    assert banned.value.banned and banned.value.retry_after_s == 10  # 2 x the 5 s still to wait
    clock.now += 10
    assert make_client(sim.base_url, clock=clock).agg_trades("BTCUSDT", from_id=0).records


def test_injected_418_is_a_ban_for_its_retry_after(sim: SimBinance, clock: FakeClock) -> None:
    sim.inject("418", retry_after_s=120)
    client = make_client(sim.base_url, clock=clock)
    with pytest.raises(RateLimited) as banned:
        client.agg_trades("BTCUSDT", from_id=0)
    assert banned.value.banned and banned.value.retry_after_s == 120
    clock.now += 100
    with pytest.raises(RateLimited):  # refused by the client itself, nothing sent
        client.agg_trades("BTCUSDT", from_id=0)
    with pytest.raises(RateLimited) as again:  # a client that does not know: banned again
        make_client(sim.base_url, clock=clock).agg_trades("BTCUSDT", from_id=0)
    assert again.value.banned and again.value.retry_after_s == 20
    clock.now += 20
    assert client.agg_trades("BTCUSDT", from_id=0).records
    assert len(sim.requests_log) == 3


def test_5xx_and_reset_are_exchange_unavailable(sim: SimBinance) -> None:
    client = make_client(sim.base_url)
    sim.inject("5xx", 3)
    sim.inject("reset")
    for _ in range(4):
        with pytest.raises(ExchangeUnavailable):
            client.agg_trades("BTCUSDT", from_id=0)
    assert [status for _, _, status in sim.requests_log] == [503, 500, 502, 0]
    assert sim.served_trades("BTCUSDT") == []  # faults that do not answer normally serve no trades
    assert client.agg_trades("BTCUSDT", from_id=0).records  # the faults are used up
    assert sim.faults_served == {"5xx": 3, "reset": 1}


def test_a_slow_answer_times_out_as_exchange_unavailable(sim: SimBinance) -> None:
    sim.inject("slow", delay_s=1.5)
    client = make_client(sim.base_url, timeout_s=(1.0, 0.5))
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="Timeout"):
        client.agg_trades("BTCUSDT", from_id=0)
    assert time.monotonic() - started < 1.4
    assert len(client.agg_trades("BTCUSDT", from_id=0).records) == 1000


@pytest.mark.parametrize("kind", ["html200", "wrong_shape", "truncated"])
def test_bodies_that_are_not_a_page_are_bad_answers(sim: SimBinance, kind: str) -> None:
    sim.inject(kind, symbol="ETHUSDT")
    client = make_client(sim.base_url)
    assert client.agg_trades("BTCUSDT", from_id=0).records  # the fault waits for its symbol
    with pytest.raises(BadAnswer, match="not JSON|not a list"):  # retryable: a maintenance page, a cut body
        client.agg_trades("ETHUSDT", from_id=0)
    assert client.agg_trades("ETHUSDT", from_id=0).records
    assert sim.faults_served == {kind: 1}


def test_truncated_body_is_cut_with_a_matching_content_length(sim: SimBinance) -> None:
    sim.inject("truncated")
    raw = requests.get(f"{sim.base_url}/api/v3/aggTrades", params={"symbol": "ETHUSDT", "limit": "10"}, timeout=5)
    whole = requests.get(f"{sim.base_url}/api/v3/aggTrades", params={"symbol": "ETHUSDT", "limit": "10"}, timeout=5)
    assert raw.status_code == 200 and int(raw.headers["Content-Length"]) == len(raw.content)
    assert raw.content == whole.content[: len(whole.content) // 2]


def test_real_clock_latency_and_unknown_fault() -> None:
    now_ms = int(time.time() * 1000)
    with SimBinance([ETH], seed=1, history_start_ms=now_ms - HISTORY_MS, latency_s=0.2) as sim:
        started = time.monotonic()
        page = make_client(sim.base_url).agg_trades("ETHUSDT", limit=1)
        assert time.monotonic() - started >= 0.2
        assert page.server_time_ms is not None and abs(page.server_time_ms - time.time() * 1000) < 5000
        with pytest.raises(ValueError):
            sim.inject("teapot")
