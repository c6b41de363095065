"""The core's one set of rules against hostile messages (issue 10), pure: each rule here is one the Spark job applies
too (``tests/streaming/test_validation_agreement.py`` holds the two to the same verdicts)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from decimal import Decimal

import pymysql
import pytest

from pipeline.adapters.mysql import connection
from pipeline.core import messages, times
from pipeline.core.trades import MalformedTrade, Trade, is_symbol, parse_archive_row, parse_rest
from tests.hostile import hostile_copies

PUBLISHED_MS = 1_767_268_860_000
MalformedMessage = messages.MalformedMessage
REAL = Trade("BTCUSDT", 26_129, *(Decimal(x) for x in ("87000.12", "0.5")), 27_781, 27_790,
             PUBLISHED_MS - 1_000, False, True)


def _with(**changes: object) -> bytes:
    return json.dumps({**json.loads(messages.encode_trade(REAL)[1]), **changes}).encode()


def test_the_real_message_is_accepted() -> None:
    assert messages.classify(messages.encode_trade(REAL)[1], PUBLISHED_MS) == REAL


@pytest.mark.parametrize("raw", hostile_copies(REAL), ids=lambda raw: raw[:40].decode("utf-8", "replace"))
def test_issue_10s_eleven_broken_copies_are_refused_with_a_reason(raw: bytes) -> None:
    """Each is MalformedMessage, never another exception (a decimal.InvalidOperation once stopped every producer)."""
    with pytest.raises(MalformedMessage) as info:
        messages.classify(raw, PUBLISHED_MS)
    assert str(info.value)


@pytest.mark.parametrize("symbol", ["btcusdt", "BTCUSDT ", " BTCUSDT", "BTCUSDT\n", "BTCUSDT\r", "BTCUSDT\r\n",
                                    "BTCUSDT\u0085", "BTCUSDT\u2028", "BTC-USDT", "B", "A" * 21, "12345",
                                    "ＢＴＣ", ""])
def test_only_binance_spellings_are_symbols(symbol: str) -> None:
    """Python's $ matched before a final newline: "BTCUSDT\\n" was a symbol of its own (and Java's $ before more)."""
    assert not is_symbol(symbol)
    with pytest.raises(MalformedMessage):
        messages.decode(_with(s=symbol))


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1INCHUSDT", "AB", "A" * 20])
def test_binance_symbols_are_symbols(symbol: str) -> None:
    assert is_symbol(symbol)


@pytest.mark.parametrize("price", [" 87000.12", "87000.12 ", "\x0187000.12", "87000.12\xa0", "87000.12\u3000",
                                   "８７", "87_000.12", "87000.12\n", "1" * 21 + ".5", "1e30", "NaN", "-1",
                                   "1.000000001", "1.0000000000000000001"])
def test_a_price_must_be_an_ascii_decimal_with_at_most_8_places_in_range(price: str) -> None:
    with pytest.raises(MalformedMessage):
        messages.decode(_with(p=price))
    with pytest.raises(MalformedTrade):
        parse_rest("BTCUSDT", {**json.loads(_with()), "p": price})


@pytest.mark.parametrize("number", ["1.5", "87000", "1.000000000000000000001", "100000000.000000001", "-1"])
def test_a_json_number_for_a_price_or_quantity_is_refused(number: str) -> None:
    """Spark's JSON reader rounds a number given for a string field through a double (1.000000000000000000001 was
    an accepted "1.0"): strings only, on both sides, whatever the spacing."""
    text = messages.encode_trade(REAL)[1].decode()
    for field in ("p", "q"):
        spelled = json.dumps(getattr(REAL, "price" if field == "p" else "quantity").__format__("f"))
        for spacing in (":", " : ", ":\n\t"):
            raw = text.replace(f'"{field}":{spelled}', f'"{field}"{spacing}{number}')
            assert raw != text
            with pytest.raises(MalformedMessage, match="not a JSON string"):
                messages.decode(raw.encode())


def test_an_escaped_key_cannot_dodge_the_rule() -> None:
    """With escapes, '\\u0070' is "p" to every JSON reader; no message we write needs a backslash."""
    text = messages.encode_trade(REAL)[1].decode()
    raw = text.replace(f'"p":"{REAL.price:f}"', '"\\u0070":1.0000000000000000001')
    assert raw != text
    with pytest.raises(MalformedMessage):
        messages.decode(raw.encode())


@pytest.mark.parametrize("raw", [
    messages.encode_trade(REAL)[1].decode().encode("utf-16"),
    messages.encode_trade(REAL)[1].decode().encode("utf-32"),
    b"\xef\xbb\xbf" + messages.encode_trade(REAL)[1],  # UTF-8 with a BOM
    messages.encode_trade(REAL)[1][:-1] + b',"x":"\xff"}',  # not UTF-8 in a field nobody reads
    messages.encode_trade(REAL)[1][:-1] + ',"x":"\ufffd"}'.encode(),
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser goes: RecursionError
    b'{"v":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_only_utf8_json_within_the_parsers_depth_is_read(raw: bytes) -> None:
    """json.loads guesses UTF-16/32 from bytes (Spark reads UTF-8 only), and a RecursionError escaped decode, which
    stopped every producer's resume scan at start-up."""
    with pytest.raises(MalformedMessage):
        messages.decode(raw)


def test_a_message_without_a_kafka_timestamp_is_refused_and_the_future_too() -> None:
    """Kafka's -1 ("no timestamp") exempted a message from the future rule: a 2099 heartbeat with it closed every
    window of its symbol."""
    beat = messages.encode_heartbeat(messages.Heartbeat("BTCUSDT", PUBLISHED_MS, 4_070_908_800_000))[1]
    for published in (-1, 0):
        with pytest.raises(MalformedMessage, match="without a Kafka timestamp"):
            messages.classify(messages.encode_trade(REAL)[1], published)
    with pytest.raises(MalformedMessage, match="heartbeat declares complete a time after"):
        messages.classify(beat, PUBLISHED_MS)
    with pytest.raises(MalformedMessage, match="trade time after"):
        messages.classify(_with(T=PUBLISHED_MS + 300_001), PUBLISHED_MS)
    assert messages.classify(_with(T=PUBLISHED_MS + 300_000), PUBLISHED_MS).event_time_ms == PUBLISHED_MS + 300_000
    assert messages.classify(beat, None) == messages.decode(beat)  # a caller with no timestamp judges no time


@pytest.mark.parametrize(("field", "value"), [("a", 2**53), ("f", 2**53), ("l", 2**53), ("a", -1),
                                              ("T", 1_483_228_799_999), ("T", 4_102_444_800_000),
                                              ("l", 27_781 + 1_000_000)])
def test_id_time_and_fill_bounds(field: str, value: int) -> None:
    payload = {**json.loads(_with()), field: value}
    if field == "l":
        payload["f"] = 27_781
    with pytest.raises(MalformedTrade):
        parse_rest("BTCUSDT", payload)


def test_the_notional_bound_keeps_every_window_sum_in_its_column() -> None:
    with pytest.raises(MalformedTrade, match="10\\^15"):
        parse_rest("BTCUSDT", {**json.loads(_with()), "p": "9999999999.99999999", "q": "100001"})
    with pytest.raises(MalformedTrade, match="10\\^15"):
        parse_archive_row("BTCUSDT", ["1", "9999999999.99999999", "100001", "1", "1", str(PUBLISHED_MS), "True",
                                      "True"])


def test_kafka_timestamps_nobody_validated_never_fail_a_write() -> None:
    """A Kafka timestamp past 9999 made utc() raise while the batch quarantined its message, at every start."""
    assert times.utc_or_none(253_402_300_800_000) is None
    assert times.utc_or_none(-1) is None
    assert times.utc_or_none(None) is None
    assert times.utc(253_402_300_799_999) == datetime(9999, 12, 31, 23, 59, 59, 999_000)  # exact, no float
    assert all(times.ms(times.utc(ms)) == ms for ms in range(PUBLISHED_MS, PUBLISHED_MS + 5_000))


@pytest.mark.parametrize("code", [1205, 1213, 2006, 2013])
def test_lock_waits_deadlocks_and_lost_connections_are_retried(code: int) -> None:
    """1213 and 1205 (the server rolled the transaction back) and 2006/2013 (connection lost) once ended the job."""
    assert connection.retryable(pymysql.err.OperationalError(code, "x"))
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = pymysql.err.OperationalError(code, "x")
    assert connection.retryable(wrapped)


@pytest.mark.parametrize("error", [(1064, "syntax"), (1406, "data too long"), (1045, "access denied")])
def test_errors_about_the_statement_or_the_login_are_not_retried(error: tuple[int, str]) -> None:
    assert not connection.retryable(pymysql.err.ProgrammingError(*error))
    assert not connection.retryable(pymysql.err.OperationalError(*error))


REAL_TEXT = messages.encode_trade(REAL)[1].decode()


@pytest.mark.parametrize("raw", [
    REAL_TEXT + " garbage", REAL_TEXT + '{"x":1}', REAL_TEXT + "]", REAL_TEXT + "\x00",  # Spark read the first object
    REAL_TEXT.replace('"s":"BTCUSDT"', "'s':'BTCUSDT'"), REAL_TEXT.replace('"p":', "'p':"),  # Spark reads 'quotes'
    REAL_TEXT[:-1] + ',"x":{"y":1}}', REAL_TEXT[:-1] + ',"x":[1]}',  # nesting: the parsers stop at other depths
    REAL_TEXT[:-1] + ',"x":NaN}', REAL_TEXT[:-1] + ',"x":-Infinity}',  # Python reads these, Spark here does not
    REAL_TEXT[:-1] + ',"x":' + "1" * 1001 + "}",  # Spark refuses a number over 1,000 characters
    REAL_TEXT[:-1] + ',"x":"' + "A" * 1_000_001 + '"}',
    # a field twice: Python kept the last value, Spark's reader failed on a first one of the wrong type (review)
    REAL_TEXT.replace('"T":', '"T":"x","T":'), REAL_TEXT[:-1] + ',\r"s":"ETHUSDT"}', REAL_TEXT[:-1] + ',"p":"2"}',
])
def test_one_flat_object_as_strict_json_or_nothing(raw: str) -> None:
    with pytest.raises(MalformedMessage):
        messages.decode(raw.encode())


def test_a_tombstone_is_refused_not_a_crash() -> None:
    """A null value (a tombstone) raised AttributeError in the resume scan: every producer stopped at start."""
    with pytest.raises(MalformedMessage):
        messages.classify(None, PUBLISHED_MS)


@pytest.mark.parametrize(("spelled", "price"), [("1e-8", "0.00000001"), ("1.5E+3", "1500"), ("+1.5", "1.5"),
                                                (".5", "0.5"), ("5.", "5"), ("1.500000000000", "1.5")])
def test_decimal_spellings_the_core_and_spark_both_read(spelled: str, price: str) -> None:
    assert messages.decode(_with(p=spelled)).price == Decimal(price)


@pytest.mark.parametrize("spelled", ["10e-9", "100e-10", "15000000000e-10", "0e-20", "0.0e-9", "0e-999999999"])
def test_places_are_counted_from_the_spelling_as_spark_counts_them(spelled: str) -> None:
    """Spark can only count a long spelling's places from its text; the core counted them from the value and
    accepted what Spark refused (10e-9 is 1e-8, but spelled with 9 places)."""
    with pytest.raises(MalformedMessage, match="decimal places|not a decimal"):
        messages.decode(_with(p=spelled))


@pytest.mark.parametrize("spelled", ["1" * 65_536 + "x", "0." + "0" * 65_536 + "1x", "1." + "1" * 65_536 + "e"])
def test_a_long_hostile_decimal_is_refused_in_linear_time(spelled: str) -> None:
    """The decimal pattern was ambiguous ("[0-9]+\\.?[0-9]*"): 16,000 digits took 3 s, growing with the square of the
    length, so one such price held a producer for hours. Now each is refused at once (the bound is 50x slack)."""
    started = time.monotonic()
    with pytest.raises(MalformedTrade):
        parse_rest("BTCUSDT", {**json.loads(_with()), "p": spelled})
    assert time.monotonic() - started < 1.0
