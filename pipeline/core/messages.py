"""The Kafka message: versioned JSON, keyed by symbol, decimals as strings so nothing is rounded on the wire.

    key:   b"BTCUSDT"
    value: {"v": 1, "type": "trade", "s": "BTCUSDT", "a": 26129, "p": "0.01633102", "q": "4.70443515",
            "f": 27781, "l": 27781, "T": 1498793709153, "m": true, "M": true}

A second message type marks progress when trades are sparse, so quiet windows still close::

    value: {"v": 1, "type": "heartbeat", "T": 1498793760000}

meaning: the producer has published every trade with an event time before ``T`` (for all its symbols).
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

from pipeline.core.trades import MalformedTrade, Trade, parse_rest

SCHEMA_VERSION = 1
HEARTBEAT_KEY = b"__heartbeat__"


class MalformedMessage(MalformedTrade):
    """A Kafka value that is not a message of a supported schema version."""


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    complete_before_ms: int


def encode_trade(trade: Trade) -> tuple[bytes, bytes]:
    value = {
        "v": SCHEMA_VERSION, "type": "trade", "s": trade.symbol, "a": trade.agg_id,
        "p": _plain(trade.price), "q": _plain(trade.quantity), "f": trade.first_trade_id,
        "l": trade.last_trade_id, "T": trade.event_time_ms, "m": trade.buyer_is_maker, "M": trade.best_match,
    }
    return trade.symbol.encode(), json.dumps(value, separators=(",", ":")).encode()


def encode_heartbeat(heartbeat: Heartbeat) -> tuple[bytes, bytes]:
    value = {"v": SCHEMA_VERSION, "type": "heartbeat", "T": heartbeat.complete_before_ms}
    return HEARTBEAT_KEY, json.dumps(value, separators=(",", ":")).encode()


def _plain(value: Decimal) -> str:
    return format(value, "f")


def decode(raw: bytes) -> Trade | Heartbeat:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {raw[:200]!r}") from exc
    if not isinstance(value, dict):
        raise MalformedMessage(f"not a JSON object: {raw[:200]!r}")
    if value.get("v") != SCHEMA_VERSION:
        raise MalformedMessage(f"unsupported schema version {value.get('v')!r}: {raw[:200]!r}")
    kind = value.get("type")
    if kind == "heartbeat":
        t = value.get("T")
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise MalformedMessage(f"heartbeat T must be a positive integer: {raw[:200]!r}")
        return Heartbeat(t)
    if kind != "trade":
        raise MalformedMessage(f"unknown message type {kind!r}: {raw[:200]!r}")
    symbol = value.get("s")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedMessage(f"trade without a symbol: {raw[:200]!r}")
    try:
        return parse_rest(symbol, value)
    except MalformedTrade as exc:
        raise MalformedMessage(str(exc)) from exc
