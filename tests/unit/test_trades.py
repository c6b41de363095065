from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import messages
from pipeline.core.trades import (
    Gap,
    MalformedTrade,
    Trade,
    invalid_reason,
    parse_archive_row,
    parse_rest,
    parse_rest_page,
)
from pipeline.errors import InputError
from tests.unit.strategies import rest_payload, trades

BINANCE_DOC_EXAMPLE = {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
                       "T": 1498793709153, "m": True, "M": True}


def test_parses_the_binance_documentation_example() -> None:
    trade = parse_rest("BNBBTC", BINANCE_DOC_EXAMPLE)
    assert trade == Trade("BNBBTC", 26129, Decimal("0.01633102"), Decimal("4.70443515"), 27781, 27781,
                          1498793709153, True, True)
    assert trade.taker_side == "sell"  # m: the buyer was the maker, so the aggressor sold
    assert trade.trade_count == 1


def test_archive_row_in_milliseconds_and_microseconds_give_the_same_trade() -> None:
    ms = parse_archive_row("XRPETH", "13519807,0.00141342,23.00000000,15373518,15373520,1570752011620,False,True"
                           .split(","))
    us = parse_archive_row("XRPETH", "13519807,0.00141342,23.00000000,15373518,15373520,1570752011620123,False,True"
                           .split(","))
    assert ms == us
    assert ms.event_time_ms == 1570752011620 and ms.trade_count == 3 and ms.taker_side == "buy"


def test_binance_invalid_records_are_named() -> None:
    record = dict(BINANCE_DOC_EXAMPLE, p="0", q="0", f=-1, l=-1)
    assert invalid_reason(parse_rest("BTCUSDT", record)) == "invalid record: trade ids are -1"
    assert invalid_reason(parse_rest("BTCUSDT", dict(BINANCE_DOC_EXAMPLE, p="0.00000000"))) == \
        "invalid record: price is 0"
    assert invalid_reason(parse_rest("BTCUSDT", dict(BINANCE_DOC_EXAMPLE, q="0"))) == "invalid record: quantity is 0"
    assert invalid_reason(parse_rest("BTCUSDT", BINANCE_DOC_EXAMPLE)) is None


@pytest.mark.parametrize("change", [
    {"p": 0.5}, {"p": "abc"}, {"p": "-1"}, {"p": "NaN"}, {"p": "1.000000001"}, {"p": "1e12"}, {"a": "1"},
    {"a": True}, {"T": 1.5}, {"m": "true"}, {"f": 5, "l": 4}, {"f": -1, "l": 3}, {"a": -1},
])
def test_corrupt_rest_records_raise_the_documented_error(change: dict[str, object]) -> None:
    with pytest.raises(MalformedTrade):
        parse_rest("BTCUSDT", dict(BINANCE_DOC_EXAMPLE, **change))


def test_missing_fields_and_non_list_pages_are_rejected() -> None:
    with pytest.raises(MalformedTrade, match="lacks p"):
        parse_rest("BTCUSDT", {k: v for k, v in BINANCE_DOC_EXAMPLE.items() if k != "p"})
    with pytest.raises(MalformedTrade):
        parse_rest_page("BTCUSDT", {"code": -1121, "msg": "Invalid symbol."})


@pytest.mark.parametrize("row", ["1,2,3", "x,0.1,1,1,1,1,True,True", "1,0.1,1,1,1,1,maybe,True",
                                 "1,0.1,1,1,1,1,True,True,extra,col"])
def test_malformed_archive_rows_raise(row: str) -> None:
    with pytest.raises(MalformedTrade):
        parse_archive_row("BTCUSDT", row.split(","))


def test_an_aggtrade_of_more_than_a_million_trades_is_refused() -> None:
    """1,024 aggTrades spanning 2^53 trade ids each would sum past a BIGINT in one window's trade_count."""
    ok = "1,1.5,2.0,0,999999,1735689600000,True,True".split(",")
    assert parse_archive_row("BTCUSDT", ok).last_trade_id == 999_999
    with pytest.raises(MalformedTrade, match="more than 10\\^6 trades"):
        parse_archive_row("BTCUSDT", "1,1.5,2.0,0,1000000,1735689600000,True,True".split(","))
    with pytest.raises(MalformedTrade, match="more than 10\\^6 trades"):
        parse_rest("BTCUSDT", {"a": 1, "p": "1.5", "q": "2", "f": 5, "l": 2**53 - 1, "T": 1735689600000,
                               "m": True, "M": True})


@given(trades())
def test_any_valid_payload_round_trips(trade: Trade) -> None:
    assert parse_rest(trade.symbol, json.loads(json.dumps(rest_payload(trade)))) == trade
    key, value = messages.encode_trade(trade)
    assert key == trade.symbol.encode()
    assert messages.decode(value) == trade
    # Written by hand for speed, byte for byte what json.dumps writes (the wire format other readers may hash).
    assert value == json.dumps({
        "v": messages.SCHEMA_VERSION, "type": "trade", "s": trade.symbol, "a": trade.agg_id,
        "p": format(trade.price, "f"), "q": format(trade.quantity, "f"), "f": trade.first_trade_id,
        "l": trade.last_trade_id, "T": trade.event_time_ms, "m": trade.buyer_is_maker, "M": trade.best_match,
    }, separators=(",", ":")).encode()


@given(trades(), st.binary(min_size=1, max_size=8), st.integers(min_value=0, max_value=200))
def test_any_corrupted_message_raises_the_documented_error_and_nothing_else(
        trade: Trade, junk: bytes, at: int) -> None:
    _, value = messages.encode_trade(trade)
    at = at % len(value)
    corrupted = value[:at] + junk + value[at + len(junk):]
    try:
        decoded = messages.decode(corrupted)
    except InputError:
        return
    # A corruption can still be a valid message (say, a digit changed into another digit).
    assert isinstance(decoded, (Trade, messages.Heartbeat))


def test_heartbeat_round_trip_and_unknown_versions() -> None:
    beat = messages.Heartbeat("ADAUSDT", 1_699_999_940_000, 1_700_000_000_000)
    key, value = messages.encode_heartbeat(beat)
    assert key == b"ADAUSDT"  # beside the symbol's trades, in their partition
    assert messages.decode(value) == beat
    with pytest.raises(messages.MalformedMessage, match="symbol"):
        messages.decode(b'{"v": 1, "type": "heartbeat", "T": 1700000000000}')  # the global kind of schema 1
    with pytest.raises(messages.MalformedMessage, match="from <= T"):
        messages.decode(b'{"v": 1, "type": "heartbeat", "s": "ADAUSDT", "from": 9, "T": 8}')
    with pytest.raises(messages.MalformedMessage, match="version"):
        messages.decode(b'{"v": 2, "type": "trade"}')
    with pytest.raises(messages.MalformedMessage, match="type"):
        messages.decode(b'{"v": 1, "type": "quote"}')


def test_sequencer_skips_what_was_seen_and_reports_gaps() -> None:
    from pipeline.core.trades import Sequencer

    def t(agg_id: int, symbol: str = "BTCUSDT") -> Trade:
        return Trade(symbol, agg_id, Decimal(1), Decimal(1), 0, 0, 1, False, True)

    seq = Sequencer({"BTCUSDT": 9})
    assert seq.observe(t(8)) == (False, None)
    assert seq.observe(t(9)) == (False, None)
    assert seq.observe(t(10)) == (True, None)
    assert seq.observe(t(13)) == (True, Gap("BTCUSDT", 11, 12))
    assert seq.observe(t(5, "ETHUSDT")) == (True, None)  # first sight of a symbol: no gap to know of
    assert seq.last_ids == {"BTCUSDT": 13, "ETHUSDT": 5}


def test_sequencer_with_published_ranges_skips_only_what_kafka_has() -> None:
    from pipeline.core.trades import Sequencer, id_ranges

    def t(agg_id: int) -> Trade:
        return Trade("XRPETH", agg_id, Decimal(1), Decimal(1), 0, 0, 1, False, True)

    assert id_ranges([5, 1, 2, 3, 7, 6, 3]) == [(1, 3), (5, 7)]
    # Kafka holds a later day (ids 100..120) and part of this one (10..12): an older replay still publishes.
    seq = Sequencer(published={"XRPETH": id_ranges([*range(100, 121), 10, 11, 12])})
    verdicts = [seq.observe(t(i))[0] for i in (8, 9, 10, 11, 12, 13, 100, 121)]
    assert verdicts == [True, True, False, False, False, True, False, True]
    assert seq.observe(t(13)) == (False, None)  # repeated within the stream
    assert seq.observe(t(200)) == (True, Gap("XRPETH", 122, 199))
