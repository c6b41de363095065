"""Binance aggTrades: parse REST payloads and public-data archive rows into ``Trade`` values, and validate them.

A REST record (``GET /api/v3/aggTrades``) looks like::

    {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781, "T": 1498793709153,
     "m": true, "M": true}

and an archive row (``<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv``, no header) like::

    13519807,0.00141342,23.00000000,15373518,15373518,1570752011620,True,True

(agg id, price, quantity, first trade id, last trade id, timestamp, buyer is maker, best match). Archive timestamps
are milliseconds, or microseconds in spot files from 2025 on: told apart by magnitude.

Since 2022 Binance also returns *invalid* records (``p="0"``, ``q="0"``, ``f=-1``, ``l=-1``). They parse, but
``invalid_reason`` names why they must not be counted.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from pipeline.errors import InputError

# The one set of validation rules: the producer, the archive reader and the Spark job (``pipeline.spark.transforms``
# imports these) accept exactly the same trades, and every accepted one can be written to MySQL.
# Exact decimals with these bounds fit Spark DECIMAL(18, 8) and MySQL DECIMAL(18, 8) without rounding.
PRICE_SCALE = 8
MAX_INTEGER_DIGITS = 10
# price x quantity per aggTrade (far above any real one): 10^7 of them in a minute still fit quote_volume's
# DECIMAL(38, 16) (22 integer digits), so no window sum can overflow.
MAX_NOTIONAL = 10**15
MIN_TIME_MS = 1_483_228_800_000  # 2017-01-01: before Binance existed
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01: no ms timestamp a clock produces today; µs ones are far above it
MAX_ID = 2**53  # agg and trade ids: exact in JSON doubles
# Exchange trades in one aggTrade (last - first + 1; one taker order's fills at one price). Real ones are far
# smaller; the bound keeps a window's trade_count (a sum over its aggTrades) far inside a BIGINT.
MAX_FILLS = 1_000_000
# Patterns shared with the Spark job, so they must mean the same in Python's and Java's regular expressions. Their
# end is ``(?![\s\S])`` (nothing follows), not ``$``: Python's ``$`` also matches before a final newline, and
# Java's before \r, \u0085 or \u2028 too, which let "BTCUSDT\n" through as a symbol of its own.
END = r"(?![\s\S])"
SYMBOL_PATTERN = "^(?=[A-Z0-9]*[A-Z])[A-Z0-9]{2,20}" + END  # as Binance spells spot symbols (a letter at least)
# A decimal as text: ASCII digits, one optional point, an optional sign and exponent; no whitespace, underscores or
# other digits (Python's Decimal strips Unicode spaces and reads "1_000" and "１２"; Spark's cast trims control
# characters: each side once accepted what the other refused).
# (Unambiguous, so a long hostile string is matched or refused in linear time: "[0-9]+\.?[0-9]*" took seconds.)
DECIMAL_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?" + END
# Of a decimal's spelling: the fraction digits up to the last non-zero one, and the exponent. Its decimal places
# are counted from them (len(group 1) - exponent), by the core and the Spark job alike: "10e-9" has 9, although
# its value, 1e-8, needs 8 (the cast to 18 places could not see a digit beyond them; counting the spelling can).
DECIMAL_PLACES_PATTERN = r"^[+-]?[0-9]*\.?((?:[0-9]*[1-9])?)0*(?:[eE]([+-]?[0-9]{1,9}))?" + END
# The common spelling (Binance's, ours): at most 10 integer digits and 8 places, which DECIMAL(18,8) holds exactly.
PLAIN_DECIMAL_PATTERN = r"^[0-9]{1,10}(?:\.[0-9]{0,8})?" + END
_SYMBOL = re.compile(SYMBOL_PATTERN)
_DECIMAL = re.compile(DECIMAL_PATTERN)
_DECIMAL_PLACES = re.compile(DECIMAL_PLACES_PATTERN)
_MICROS_THRESHOLD = 10**14  # ms timestamps stay below this until the year 5138; µs ones are above it since 1973


class MalformedTrade(InputError):
    """A payload or row that is not an aggTrade at all (missing field, wrong type, bad number)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    agg_id: int
    price: Decimal
    quantity: Decimal
    first_trade_id: int
    last_trade_id: int
    event_time_ms: int
    buyer_is_maker: bool  # Binance's "m": the buyer was the maker, so the taker (aggressor) sold
    best_match: bool

    @property
    def taker_side(self) -> str:
        return "sell" if self.buyer_is_maker else "buy"

    @property
    def trade_count(self) -> int:
        return self.last_trade_id - self.first_trade_id + 1


def _decimal(raw: object, field: str, quote: object) -> Decimal:
    # A string, as Binance and our messages write it. Never a JSON number: Spark's JSON reader turns one given for
    # a string field into a double (1.000000000000000000001 became an accepted "1.0").
    if not isinstance(raw, str):
        raise MalformedTrade(f"{field} must be a decimal string, got {raw!r} in {quote!r}")
    spelled = _DECIMAL_PLACES.match(raw) if _DECIMAL.match(raw) else None
    if spelled is None:
        raise MalformedTrade(f"{field} {raw!r} is not a decimal number in {quote!r}")
    places = len(spelled[1]) - int(spelled[2] or 0)
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise MalformedTrade(f"{field} {raw!r} is not a decimal number in {quote!r}") from exc
    if not value.is_finite() or value < 0:
        raise MalformedTrade(f"{field} {raw!r} must be a finite non-negative number in {quote!r}")
    if value >= Decimal(10) ** MAX_INTEGER_DIGITS:  # first: quantizing a huge value would raise
        raise MalformedTrade(f"{field} {raw!r} is out of range in {quote!r}")
    if places > PRICE_SCALE:
        raise MalformedTrade(f"{field} {raw!r} has more than {PRICE_SCALE} decimal places in {quote!r}")
    return value.quantize(Decimal(1).scaleb(-PRICE_SCALE))


def _int(raw: object, field: str, quote: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise MalformedTrade(f"{field} must be an integer, got {raw!r} in {quote!r}")
    return raw


def _bool(raw: object, field: str, quote: object) -> bool:
    if not isinstance(raw, bool):
        raise MalformedTrade(f"{field} must be true or false, got {raw!r} in {quote!r}")
    return raw


def is_symbol(text: str) -> bool:
    return _SYMBOL.match(text) is not None


def _checked(trade: Trade, quote: object) -> Trade:
    if not is_symbol(trade.symbol):
        raise MalformedTrade(f"symbol {trade.symbol!r} is not 2 to 20 of A-Z, 0-9 in {quote!r}")
    if not 0 <= trade.agg_id < MAX_ID:
        raise MalformedTrade(f"agg id must be in 0..2^53 in {quote!r}")
    if not MIN_TIME_MS <= trade.event_time_ms < MAX_TIME_MS:
        raise MalformedTrade(f"timestamp must be epoch ms between 2017 and 2100 in {quote!r}")
    ids = (trade.first_trade_id, trade.last_trade_id)
    if ids != (-1, -1) and (min(ids) < 0 or max(ids) >= MAX_ID or trade.last_trade_id < trade.first_trade_id):
        raise MalformedTrade(f"trade ids must satisfy 0 <= first <= last < 2^53 in {quote!r}")
    if ids != (-1, -1) and trade.last_trade_id - trade.first_trade_id >= MAX_FILLS:
        raise MalformedTrade(f"an aggTrade of more than 10^6 trades (last - first + 1) in {quote!r}")
    if trade.price * trade.quantity >= MAX_NOTIONAL:
        raise MalformedTrade(f"price x quantity is 10^15 or more in {quote!r}")
    return trade


def parse_rest(symbol: str, payload: Mapping[str, Any]) -> Trade:
    """One record of ``/api/v3/aggTrades``; ``MalformedTrade`` for anything that is not one."""
    if not isinstance(payload, Mapping):
        raise MalformedTrade(f"an aggTrade must be a JSON object, got {payload!r}")
    missing = [k for k in "apqflTmM" if k not in payload]
    if missing:
        raise MalformedTrade(f"aggTrade lacks {', '.join(missing)}: {dict(payload)!r}")
    return _checked(Trade(
        symbol=symbol,
        agg_id=_int(payload["a"], "a", payload),
        price=_decimal(payload["p"], "p", payload),
        quantity=_decimal(payload["q"], "q", payload),
        first_trade_id=_int(payload["f"], "f", payload),
        last_trade_id=_int(payload["l"], "l", payload),
        event_time_ms=_int(payload["T"], "T", payload),
        buyer_is_maker=_bool(payload["m"], "m", payload),
        best_match=_bool(payload["M"], "M", payload),
    ), payload)


def parse_rest_page(symbol: str, payload: object) -> list[Trade]:
    if not isinstance(payload, list):
        raise MalformedTrade(f"an aggTrades page must be a JSON array, got {str(payload)[:200]!r}")
    return [parse_rest(symbol, record) for record in payload]


_BOOLS = {"true": True, "false": False}


def _archive_int(raw: str, field: str, row: Sequence[str]) -> int:
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise MalformedTrade(f"{field} {raw!r} is not an integer in row {list(row)!r}") from exc


def _archive_bool(raw: str, field: str, row: Sequence[str]) -> bool:
    try:
        return _BOOLS[raw.strip().lower()]
    except KeyError as exc:
        raise MalformedTrade(f"{field} {raw!r} is not True/False in row {list(row)!r}") from exc


def archive_time_ms(raw_timestamp: int) -> int:
    """Archive timestamps are ms, or µs in spot files from 2025 on; µs are floored to ms."""
    return raw_timestamp // 1000 if raw_timestamp >= _MICROS_THRESHOLD else raw_timestamp


def parse_archive_row(symbol: str, row: Sequence[str]) -> Trade:
    """One row of a spot public-data aggTrades archive: 8 columns (a USD-M futures archive has 7: no best-match
    flag; its agg ids are another market's)."""
    if len(row) != 8:
        hint = " (7 is a USD-M futures archive: only spot aggTrades archives are accepted)" if len(row) == 7 else ""
        raise MalformedTrade(f"expected the 8 columns of a spot aggTrades archive, got {len(row)}{hint} in row "
                             f"{list(row)!r}")
    return _checked(Trade(
        symbol=symbol,
        agg_id=_archive_int(row[0], "agg id", row),
        price=_decimal(row[1].strip(), "price", row),
        quantity=_decimal(row[2].strip(), "quantity", row),
        first_trade_id=_archive_int(row[3], "first trade id", row),
        last_trade_id=_archive_int(row[4], "last trade id", row),
        event_time_ms=archive_time_ms(_archive_int(row[5], "timestamp", row)),
        buyer_is_maker=_archive_bool(row[6], "is buyer maker", row),
        best_match=_archive_bool(row[7], "is best match", row),
    ), row)


def invalid_reason(trade: Trade) -> str | None:
    """Why Binance's record must not count (``None`` for a valid trade)."""
    if trade.first_trade_id == -1 or trade.last_trade_id == -1:
        return "invalid record: trade ids are -1"
    if trade.price == 0:
        return "invalid record: price is 0"
    if trade.quantity == 0:
        return "invalid record: quantity is 0"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """Agg ids ``first_missing..last_missing`` (inclusive) never arrived."""

    symbol: str
    first_missing: int
    last_missing: int

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


class Sequencer:
    """Per-symbol agg-id bookkeeping for a stream of trades: new, already seen (skip), and gaps.

    Agg ids are consecutive per symbol and each source yields them in order, so a trade whose id is not above the
    last one seen in this stream is a repeat, and an id above ``last + 1`` reveals a gap::

        last=9:   10 -> new    12 -> new, gap 11..11    8 -> seen

    ``last_ids`` seeds ``last`` (live mode: resume after the highest id in Kafka, and report a gap between it and
    the first new trade). ``published`` lists, per symbol, inclusive id ranges already in Kafka (replay: a source
    older than what Kafka holds is still published, and only the ids really present are skipped).
    """

    def __init__(self, last_ids: Mapping[str, int] | None = None,
                 published: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> None:
        self.last_ids: dict[str, int] = dict(last_ids or {})
        self._published = {symbol: sorted(ranges) for symbol, ranges in (published or {}).items()}

    def _is_published(self, symbol: str, agg_id: int) -> bool:
        ranges = self._published.get(symbol)
        if not ranges:
            return False
        index = bisect.bisect_right(ranges, (agg_id, float("inf"))) - 1
        return index >= 0 and ranges[index][0] <= agg_id <= ranges[index][1]

    def observe(self, trade: Trade) -> tuple[bool, Gap | None]:
        last = self.last_ids.get(trade.symbol)
        if last is not None and trade.agg_id <= last:
            return False, None
        self.last_ids[trade.symbol] = trade.agg_id
        gap = Gap(trade.symbol, last + 1, trade.agg_id - 1) if last is not None and trade.agg_id > last + 1 else None
        return not self._is_published(trade.symbol, trade.agg_id), gap


def id_ranges(agg_ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges: [5, 1, 2, 3, 7, 6] -> [(1, 3), (5, 7)]."""
    ranges: list[tuple[int, int]] = []
    for agg_id in sorted(set(agg_ids)):
        if ranges and agg_id == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], agg_id)
        else:
            ranges.append((agg_id, agg_id))
    return ranges
