"""The Kafka message: versioned JSON, keyed by symbol, decimals as strings so nothing is rounded on the wire.

    key:   b"BTCUSDT"
    value: {"v": 1, "type": "trade", "s": "BTCUSDT", "a": 26129, "p": "0.01633102", "q": "4.70443515",
            "f": 27781, "l": 27781, "T": 1498793709153, "m": true, "M": true}

A second message type, the coverage heartbeat, says how complete one symbol's trades are, so windows close
per symbol, whatever other symbols or other producers do::

    key:   b"BTCUSDT"
    value: {"v": 1, "type": "heartbeat", "s": "BTCUSDT", "from": 1498793700000, "T": 1498793760000}

meaning: every trade of ``s`` with ``from <= event time < T`` has been published, before this message, in the
same partition (it shares the trades' key). Several producers may cover different stretches of one symbol; the job
keeps the union.
"""

from __future__ import annotations

import dataclasses
import json
import re
from decimal import Decimal

from pipeline.core.trades import MAX_TIME_MS, MIN_TIME_MS, MalformedTrade, Trade, is_symbol, parse_rest

SCHEMA_VERSION = 1


class MalformedMessage(MalformedTrade):
    """A Kafka value that is not a message of a supported schema version."""


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """Every trade of ``symbol`` in ``[covered_from_ms, complete_before_ms)`` is published."""

    symbol: str
    covered_from_ms: int
    complete_before_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ResumePoint:
    """What a topic says about one symbol, for a producer that restarts: its highest agg id (and that trade's
    time), and the newest coverage a heartbeat declared; either may be missing (``None``), not both."""

    last_agg_id: int | None
    last_trade_ms: int | None
    complete_before_ms: int | None = None


# A producer can only publish what has happened: a trade, or a heartbeat's T, later than the message's own Kafka
# timestamp by more than the clock skew allowed between the exchange and the producer is a bug or a forgery. (A
# heartbeat from the future would make every later trade of its symbol late.)
MAX_CLOCK_SKEW_MS = 300_000


def claims_the_future(message: Trade | Heartbeat, published_ms: int | None) -> bool:
    """Whether ``message``, published at ``published_ms`` (its Kafka timestamp; None or <= 0: unknown), speaks of a
    time that had not come yet."""
    t = message.complete_before_ms if isinstance(message, Heartbeat) else message.event_time_ms
    return published_ms is not None and published_ms > 0 and t > published_ms + MAX_CLOCK_SKEW_MS


# Rules on a message's text, checked before it is parsed, by ``decode`` here and by the Spark job on the raw value
# (one regular expression, the same in Python and Java). No backslash: with no escape sequence, a key is spelled as
# it reads, so the second rule cannot be dodged with "\u0070". Price and quantity are strings: Spark's JSON reader
# rounds a JSON number given for a string field through a double. No U+FFFD: the Spark job reads a value that is
# not UTF-8 with replacement characters, the core not at all; a message holding either is refused by both.
# And one flat object, nothing after it, no single quotes, no run of 1,000 number characters: Spark's reader
# ignores what follows the first object, reads 'single quotes' and refuses numbers over 1,000 characters, Python's
# does none of these, and the two stop nesting at different depths (our messages are flat).
TEXT_REFUSED_PATTERN = ("\\\\|\ufffd|\"[pq]\"[ \t\n\r]*+:[ \t\n\r]*+[-0-9]|[\\[\\]']|\\{[^{]*+\\{"
                        "|\\}[ \t\n\r]*+[^ \t\n\r]|[-+.0-9eE]{1000}"
                        # a field of the schema twice: json.loads keeps the last, Spark's reader fails on a first
                        # value of the wrong type; with no escapes, '"T":' can only be a key
                        "|\"(v|type|s|a|p|q|f|l|T|from|m|M)\"[ \t\n\r]*+:[\\s\\S]*\"\\1\"[ \t\n\r]*+:")
_TEXT_REFUSED = re.compile(TEXT_REFUSED_PATTERN)
TEXT_REFUSED_REASON = ("not one flat UTF-8 JSON object, holds an escape sequence or a field twice, or a price or "
                       "quantity that is not a JSON string")
MAX_MESSAGE_CHARS = 1_000_000  # Kafka's default largest message; Spark's reader has limits of its own beyond it


def classify(raw: bytes | None, published_ms: int | None) -> Trade | Heartbeat:
    """The message the job would accept from ``raw`` published at ``published_ms`` (its Kafka timestamp; None when
    the caller has none), or ``MalformedMessage``: ``decode``, then a timestamp and nothing from the future.
    (Binance's invalid records decode; see ``trades.invalid_reason``.)"""
    message = decode(raw)
    if published_ms is not None and published_ms <= 0:  # Kafka's "no timestamp" (-1): nothing to judge it by
        raise MalformedMessage("message without a Kafka timestamp")
    if claims_the_future(message, published_ms):
        what = "heartbeat declares complete a time" if isinstance(message, Heartbeat) else "trade time"
        raise MalformedMessage(f"{what} after the message was published (beyond 5 minutes of clock skew)")
    return message


def encode_trade(trade: Trade) -> tuple[bytes, bytes]:
    """The same bytes as ``json.dumps`` of the fields in this order with no spaces (a unit test holds it to that),
    written directly: a validated trade's symbol, decimals and integers need no escaping, and this runs once per
    trade on the replay's hot path."""
    symbol = trade.symbol
    value = (f'{{"v":{SCHEMA_VERSION},"type":"trade","s":"{symbol}","a":{trade.agg_id},'
             f'"p":"{trade.price:f}","q":"{trade.quantity:f}","f":{trade.first_trade_id},'
             f'"l":{trade.last_trade_id},"T":{trade.event_time_ms},'
             f'"m":{"true" if trade.buyer_is_maker else "false"},"M":{"true" if trade.best_match else "false"}}}')
    return symbol.encode(), value.encode()


def encode_heartbeat(heartbeat: Heartbeat) -> tuple[bytes, bytes]:
    value = {"v": SCHEMA_VERSION, "type": "heartbeat", "s": heartbeat.symbol, "from": heartbeat.covered_from_ms,
             "T": heartbeat.complete_before_ms}
    return heartbeat.symbol.encode(), json.dumps(value, separators=(",", ":")).encode()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python reads NaN and Infinity; Spark's reader here does not


def decode(raw: bytes | None) -> Trade | Heartbeat:
    if not isinstance(raw, bytes):  # a tombstone (a null value)
        raise MalformedMessage("no value")
    text = raw.decode("utf-8", errors="replace")  # UTF-8 only (json.loads would guess UTF-16 or -32 from bytes)
    if len(text) > MAX_MESSAGE_CHARS:
        raise MalformedMessage(f"longer than {MAX_MESSAGE_CHARS:,} characters")
    if _TEXT_REFUSED.search(text):
        raise MalformedMessage(f"{TEXT_REFUSED_REASON}: {raw[:200]!r}")
    try:  # a float anywhere else is read exactly, never rounded
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"not JSON: {raw[:200]!r}") from exc
    if not isinstance(value, dict):
        raise MalformedMessage(f"not a JSON object: {raw[:200]!r}")
    if not _is_int(value.get("v")) or value.get("v") != SCHEMA_VERSION:
        raise MalformedMessage(f"unsupported schema version {value.get('v')!r}: {raw[:200]!r}")
    kind = value.get("type")
    if kind == "heartbeat":
        t, start, symbol = value.get("T"), value.get("from"), value.get("s")
        if not isinstance(symbol, str) or not is_symbol(symbol):
            raise MalformedMessage(f"heartbeat without a valid symbol: {raw[:200]!r}")
        if not _is_int(t) or not _is_int(start) or not 0 <= start <= t < MAX_TIME_MS:  # type: ignore[operator]
            raise MalformedMessage(f"heartbeat needs integers 0 <= from <= T, T before 2100: {raw[:200]!r}")
        if t < MIN_TIME_MS:  # type: ignore[operator]
            raise MalformedMessage(f"heartbeat T must be after 2017: {raw[:200]!r}")
        return Heartbeat(symbol, start, t)  # type: ignore[arg-type]
    if kind != "trade":
        raise MalformedMessage(f"unknown message type {kind!r}: {raw[:200]!r}")
    symbol = value.get("s")
    if not isinstance(symbol, str):
        raise MalformedMessage(f"trade without a symbol: {raw[:200]!r}")
    try:
        return parse_rest(symbol, value)
    except MalformedTrade as exc:
        raise MalformedMessage(str(exc)) from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
