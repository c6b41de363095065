"""One set of rules: the core's decoder and the Spark job accept and reject exactly the same messages, hostile ones
included, and read the same values from those they accept (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import messages
from pipeline.core.trades import Trade, invalid_reason
from pipeline.spark import transforms
from tests.unit.strategies import rest_payload, trades

KAFKA_SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                "timestampType int")
EDGES = st.sampled_from([
    0, -1, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 1_483_228_799_999, 1_483_228_800_000, 4_102_444_799_999,
    4_102_444_800_000, 1_735_689_600_000_000, 1_767_269_160_000, 1_767_269_160_001,  # published + 5 min
    "1e30", "1E2", " 1.5", "1.5 ", "1.000000001", "NaN", "-0", "1.0000000000000000001", "1_000", "1e-8",
    "0.00000000", "99999999999.99999999", "9999999999.99999999", "100000000", "1" * 25 + ".5", "btcusdt",
    "BTCUSDT ", "BTC-USDT", "B", "A" * 20, "A" * 21, "true", "", "１２", "BTCUSDT\n", "BTCUSDT\r", "BTCUSDT\u2028",
    "BTCUSDT\u0085", "\x011.5", "1.5\xa0", "1.5\u3000", "\ufffd", 1.000000000000000000001, 100000000.000000001])
HOSTILE = st.one_of(EDGES, EDGES, EDGES, st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=30))
FIELDS = ("v", "type", "s", "a", "p", "q", "f", "l", "T", "m", "M")


@st.composite
def hostile_message(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["trade", "trade", "trade", "heartbeat", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=60))
    if kind == "heartbeat":
        value: dict[str, Any] = {"v": 1, "type": "heartbeat", "s": "BTCUSDT", "from": 1_767_268_800_000,
                                 "T": 1_767_268_860_000}
        fields: tuple[str, ...] = ("v", "s", "from", "T")
    else:
        value = {"v": 1, "type": "trade", "s": "BTCUSDT", **rest_payload(draw(trades()))}
        fields = FIELDS
    for field in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            value[field] = draw(HOSTILE)
        else:
            value.pop(field, None)
    # ensure_ascii=False half of the time: raw non-ASCII text, not only its escapes (which are refused as such)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if text.endswith("}") and draw(st.integers(0, 5)) == 0:  # a field written twice (json.dumps never does)
        field = draw(st.sampled_from(fields))
        text = text[:-1] + ("," if len(text) > 2 else "") + f'"{field}":{json.dumps(draw(HOSTILE))}}}'
    return text.encode()


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pipeline.compose import Root
    from pipeline.settings import Settings

    yield Root(Settings.from_mapping({"PIPELINE_SPARK_MASTER": "local[2]"})).spark("pipeline-validation-tests")


PUBLISHED = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)  # the Kafka timestamp of every message here
PUBLISHED_MS = 1_767_268_860_000


def core_verdict(raw: bytes | None) -> Trade | messages.Heartbeat | None:
    """What the core accepts: a decodable message that is not one of Binance's invalid records, nor speaks of a
    time after it was published."""
    try:
        decoded = messages.classify(raw, PUBLISHED_MS)
    except messages.MalformedMessage:
        return None
    if isinstance(decoded, Trade) and invalid_reason(decoded) is not None:
        return None
    return decoded


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=st.lists(hostile_message(), min_size=50, max_size=100))
def test_core_and_spark_agree_on_hostile_messages(spark: Any, raws: list[bytes]) -> None:
    rows = spark.createDataFrame([(b"k", r, "t", 0, i, PUBLISHED, 0) for i, r in enumerate(raws)],
                                 KAFKA_SCHEMA)
    classified = transforms.classify(transforms.parse(rows))
    reasons = {r["offset"]: r["reason"] for r in classified.select("offset", "reason").collect()}
    read = {(r["symbol"], r["agg_id"], r["price"], r["quantity"], r["first_trade_id"], r["last_trade_id"],
             r["event_ms"]) for r in transforms.trades(classified).collect()}
    for offset, raw in enumerate(raws):
        verdict = core_verdict(raw)
        assert (verdict is not None) == (reasons[offset] is None), (raw, reasons[offset], verdict)
        if isinstance(verdict, Trade):  # the same values, to the last decimal place
            assert (verdict.symbol, verdict.agg_id, verdict.price, verdict.quantity, verdict.first_trade_id,
                    verdict.last_trade_id, verdict.event_time_ms) in read, raw


DECIMAL_SPELLINGS = [
    "1.5", "1.50000000", "1.00000000000000000000", "1.0000000000000000001", "1.000000000000000000100",
    "0.000000015", "0.00000001", "1e-8", "1E-9", "1e-20", "5e-19", "1.50000000e0", "1.5E+3", "+1.5", ".5", "5.",
    " 2.5 ", "1_000", "0.0000000000000000001e11", "9999999999.99999999", "10000000000", "0.123456789012345678",
    "0.1234567800000000000000000000000000000000000000000", "12345678901234567890123.5", "\t1.5",
    "\t1.0000000000000000001", "1.5\n", "1.50000000000000000000\t", "1.5e", "1..5", "0x10", "\x011.5", "1.5\x01",
    "1.5\xa0", "1.5\u3000", "1.5\u2028", "1.5\r", "１.5", "-0", "+0.5", "1e999999999", "0e-99999999999",
]
# Spelled as JSON numbers, not strings (Spark's reader rounds them through a double); and a message's text.
NUMBER_SPELLINGS = ["1.5", "87000", "1.000000000000000000001", "100000000.000000001", "1e2", "-1"]


def test_core_and_spark_agree_on_decimal_spellings(spark: Any) -> None:
    """Each spelling of a price, one by one: the same verdict and the same value (a string longer than the cast's
    18 places once rounded silently to an accepted value in Spark; Python's Decimal accepts underscores)."""
    template = {"v": 1, "type": "trade", "s": "BTCUSDT", "a": 7, "q": "1.00000000", "f": 7, "l": 7,
                "T": PUBLISHED_MS - 1000, "m": True, "M": True}
    spellings = [json.dumps(text, ensure_ascii=False) for text in DECIMAL_SPELLINGS] + NUMBER_SPELLINGS
    raws = [json.dumps(template)[:-1].encode() + f', "p": {p}}}'.encode() for p in spellings]
    rows = spark.createDataFrame([(b"k", r, "t", 0, i, PUBLISHED, 0) for i, r in enumerate(raws)], KAFKA_SCHEMA)
    classified = transforms.classify(transforms.parse(rows))
    spark_prices = {r["offset"]: (r["price"] if r["reason"] is None else None)
                    for r in classified.select("offset", "reason", "price").collect()}
    disagreements = []
    for offset, text in enumerate(spellings):
        verdict = core_verdict(raws[offset])
        core_price = verdict.price if isinstance(verdict, Trade) else None
        if core_price != spark_prices[offset]:
            disagreements.append((text, core_price, spark_prices[offset]))
    assert spark_prices[spellings.index('"1.5"')] == Decimal("1.5")  # the test can see an accepted price
    assert not disagreements, disagreements


def test_core_and_spark_agree_on_whole_messages(spark: Any) -> None:
    """Messages a hand-written or hostile producer could send, each once: the same verdict and values. (Spark read
    'single quotes', ignored what followed the first object, and took 'p':1.000000000000000000001 as 1.0.)"""
    real = ('{"v":1,"type":"trade","s":"BTCUSDT","a":7,"p":"1.50000000","q":"2.00000000","f":7,"l":7,'
            f'"T":{PUBLISHED_MS - 1000},"m":true,"M":false}}')
    texts = [
        real, real + " garbage", real + '{"x":1}', real + "]", real + "\x00", real + " \n",
        real.replace('"s":"BTCUSDT"', "'s':'BTCUSDT'"), real.replace('"p":"1.50000000"', "'p':1.000000000000000000001"),
        real.replace('"p":"1.50000000"', "\"p\":'1.5'"), real.replace('"p":"1.50000000"', '"\\u0070":"1.5"'),
        real[:-1] + ',"x":{"y":1}}', real[:-1] + ',"x":[1]}', real[:-1] + ',"x":NaN}', real[:-1] + ',"x":-Infinity}',
        real[:-1] + ',"x":' + "1" * 999 + "}", real[:-1] + ',"x":' + "1" * 1001 + "}",
        real[:-1] + ',"x":"' + "é" * 2000 + '"}', " " + real, "\ufeff" + real,
        real.replace('"p":"1.50000000"', '"p":"1.5","p":"2.5"'), real.replace('"p":"1.50000000"', '"p":null'),
        *(real.replace('"1.50000000"', f'"{p}"') for p in ("10e-9", "100e-10", "15000000000e-10", "1e-8", "0e-20",
                                                           "1" * 2000, "1" * 30 + "x", "0." + "0" * 30 + "1")),
    ]
    raws: list[bytes | None] = [t.encode() for t in texts] + [None, real.encode("utf-16"), b"\xff" + real.encode()]
    rows = spark.createDataFrame([(b"k", r, "t", 0, i, PUBLISHED, 0) for i, r in enumerate(raws)], KAFKA_SCHEMA)
    classified = transforms.classify(transforms.parse(rows))
    spark_says = {r["offset"]: (r["reason"], r["price"]) for r in classified.select("offset", "reason", "price")
                  .collect()}
    assert spark_says[0] == (None, Decimal("1.5"))  # the real message is read
    disagreements = []
    for offset, raw in enumerate(raws):
        verdict = core_verdict(raw)
        reason, price = spark_says[offset]
        core_price = verdict.price if isinstance(verdict, Trade) else None
        if (verdict is None) != (reason is not None) or core_price != (price if reason is None else None):
            disagreements.append((raw[:80] if raw else raw, verdict, reason, price))
    assert not disagreements, disagreements
