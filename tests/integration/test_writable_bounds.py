"""Every message the core accepts can be written to MySQL, exactly (issue 10).

Hypothesis builds Kafka values at the edges of ``pipeline.core.trades``'s rules (ids up to 2^53 - 1, prices and
quantities from 10^-8 to 10^10 - 10^-8 spelled in odd but valid ways, notional just under MAX_NOTIONAL, times at
MIN_TIME_MS and MAX_TIME_MS - 1, symbols of 2 and 20 characters), lets the core decode them
(``messages.decode``), aggregates the accepted trades with the reference aggregator, and writes the window rows
(``state.write_windows``), the heartbeats' coverage (``save_coverage``) and a quarantine row for each rejected
value (``add_quarantine``) into a real database, in strict mode. Each statement must leave no warning (a DECIMAL
rounded, a string cut), and every value read back must equal the one written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters.mysql import connection, migrations, quarantine, state
from pipeline.core import coverage, times, windows
from pipeline.core.batch import QuarantinedMessage
from pipeline.core.messages import Heartbeat, decode
from pipeline.core.trades import (
    MAX_FILLS,
    MAX_ID,
    MAX_INTEGER_DIGITS,
    MAX_NOTIONAL,
    MAX_TIME_MS,
    MIN_TIME_MS,
    PRICE_SCALE,
    MalformedTrade,
    Trade,
    id_ranges,
    invalid_reason,
    is_symbol,
)
from pipeline.settings import MysqlUrl

TICK = Decimal(1).scaleb(-PRICE_SCALE)  # 0.00000001
MAX_DECIMAL = Decimal(10) ** MAX_INTEGER_DIGITS - TICK  # 9999999999.99999999: the largest accepted price/quantity
_EXACT = Context(prec=80)
LAST_WINDOW = windows.window_start_ms(MAX_TIME_MS - 1)
FIRST_WINDOW = windows.window_start_ms(MIN_TIME_MS)
STRICT = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def max_quantity(price: Decimal) -> Decimal:
    """The largest 8-decimal quantity the core accepts at ``price``: price x quantity stays below MAX_NOTIONAL."""
    if price == 0:
        return MAX_DECIMAL
    q = min(_EXACT.divide(Decimal(MAX_NOTIONAL), price), MAX_DECIMAL).quantize(TICK, rounding=ROUND_DOWN)
    if _EXACT.multiply(price, q) >= MAX_NOTIONAL:
        q -= TICK
    return min(q, MAX_DECIMAL)


def spellings(value: Decimal) -> st.SearchStrategy[Any]:
    """Valid ways to write ``value`` in a message: what a hostile (or just unusual) producer may send."""
    plain = format(value, "f")
    padded = plain + ("0" * 12 if "." in plain else "." + "0" * 12)  # more places than 8, all zero
    # Strings only, ASCII, unpadded (ADR-16: a JSON number or a padded string is refused by core and Spark alike).
    return st.sampled_from([plain, padded, f"{value:E}", "+" + plain, "000" + plain])


decimals = st.one_of(
    st.sampled_from([TICK, MAX_DECIMAL, Decimal(1), Decimal(10**5), Decimal("0.5")]),
    st.integers(min_value=1, max_value=10**18 - 1).map(lambda n: Decimal(n).scaleb(-PRICE_SCALE)),
)
ids = st.one_of(st.sampled_from([0, 1, MAX_ID - 1]), st.integers(min_value=0, max_value=MAX_ID - 1))
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
symbols = st.one_of(  # 2 to 20 of A-Z, 0-9, a letter at least (SYMBOL_PATTERN)
    st.sampled_from(["AB", "A1", "9Z", "Z" * 20, "0" * 19 + "A", "BTCUSDT"]),
    st.builds(lambda head, letter, tail: head + letter + tail, st.text(_ALNUM, min_size=1, max_size=10),
              st.sampled_from(_ALNUM[:26]), st.text(_ALNUM, max_size=9)))
window_starts = st.one_of(st.sampled_from([FIRST_WINDOW, LAST_WINDOW]),
                          st.integers(min_value=FIRST_WINDOW // 60_000, max_value=LAST_WINDOW // 60_000)
                          .map(lambda n: n * 60_000))


@st.composite
def trade_values(draw: st.DrawFn, symbol: str, window_ms: int) -> dict[str, Any]:
    """A trade message the core must accept, as a dict of JSON values."""
    kind = draw(st.sampled_from(["trade", "trade", "trade", "invalid record"]))
    price = draw(decimals)
    quantity = draw(st.one_of(st.just(max_quantity(price)), st.just(TICK),
                              st.integers(min_value=1, max_value=int(max_quantity(price) / TICK))
                              .map(lambda n: Decimal(n).scaleb(-PRICE_SCALE))))
    first = draw(st.one_of(st.just(0), ids))
    widest = min(first + MAX_FILLS - 1, MAX_ID - 1)
    last = draw(st.one_of(st.just(widest), st.just(first), st.integers(min_value=first, max_value=widest)))
    if kind == "invalid record":  # Binance's own: parsed, then excluded from the windows
        price, quantity, first, last = draw(st.sampled_from([
            (Decimal(0), quantity, first, last), (price, Decimal(0), first, last), (price, quantity, -1, -1)]))
    offset = draw(st.one_of(st.sampled_from([0, 59_999]), st.integers(min_value=0, max_value=59_999)))
    return {"v": 1, "type": "trade", "s": symbol, "a": draw(ids), "p": draw(spellings(price)),
            "q": draw(spellings(quantity)), "f": first, "l": last, "T": window_ms + offset,
            "m": draw(st.booleans()), "M": draw(st.booleans())}


@st.composite
def heartbeat_values(draw: st.DrawFn, symbol: str) -> dict[str, Any]:
    t = draw(st.one_of(st.sampled_from([MIN_TIME_MS, MAX_TIME_MS - 1]),
                       st.integers(min_value=MIN_TIME_MS, max_value=MAX_TIME_MS - 1)))
    start = draw(st.one_of(st.sampled_from([0, t]), st.integers(min_value=0, max_value=t)))
    return {"v": 1, "type": "heartbeat", "s": symbol, "from": start, "T": t}


# Values the core must reject: they go to quarantine, raw, with the core's reason.
hostile_raw = st.one_of(
    st.sampled_from([b"{}", b"[]", b"null", b"\xff\xfe not UTF-8 \xc3", b"\x00", "\U0001f4a5 emoji \u00e9".encode(),
                     b'{"v":1,"type":"trade","s":"BTCUSDT","a":1,"p":"' + b"9" * 25 + b'.5","q":"1","f":1,"l":1,'
                     b'"T":1735689600000,"m":true,"M":true}',
                     b'{"v":1,"type":"trade","s":"btcusdt ","a":9223372036854775807,"p":"1","q":"1e30","f":1,'
                     b'"l":1,"T":1735689600000123,"m":true,"M":true}']),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda body: json.dumps(body).encode(),
              st.dictionaries(st.sampled_from(["v", "type", "s", "a", "p", "q", "f", "l", "T", "m", "M"]),
                              st.one_of(st.integers(), st.text(max_size=40), st.booleans(), st.none()))),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Raw Kafka values: valid ones (trades crowded into a few windows, so sums meet, and heartbeats), and hostile
    ones (mostly rejected)."""
    valid: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        symbol, window_ms = draw(symbols), draw(window_starts)
        trades = draw(st.lists(trade_values(symbol, window_ms), min_size=1, max_size=12))
        valid += [json.dumps(v).encode() for v in trades]
        valid += [json.dumps(draw(heartbeat_values(symbol))).encode()]
    return valid, draw(st.lists(hostile_raw, max_size=4))


def _no_warnings(cur: Any, what: str) -> None:
    cur.execute("SHOW WARNINGS")
    warnings = cur.fetchall()
    assert not warnings, f"{what}: {warnings}"


def _strict(cur: Any) -> None:
    cur.execute(f"SET SESSION sql_mode = '{STRICT}'")


def accumulate(trades: list[Trade]) -> dict[tuple[str, int], tuple[windows.WindowRow, windows.Accumulator, list[Any]]]:
    """What the job writes per window: the reference row, its accumulator (merge state) and its agg-id ranges.
    As ``windows.aggregate``: valid trades only, each (symbol, agg id) once, the first one seen."""
    accs: dict[tuple[str, int], windows.Accumulator] = {}
    agg_ids: dict[tuple[str, int], set[int]] = {}
    seen: set[tuple[str, int]] = set()
    for trade in trades:
        if invalid_reason(trade) is not None or (trade.symbol, trade.agg_id) in seen:
            continue
        seen.add((trade.symbol, trade.agg_id))
        key = (trade.symbol, windows.window_start_ms(trade.event_time_ms))
        agg_ids.setdefault(key, set()).add(trade.agg_id)
        accs[key] = windows.add(accs.get(key, windows.initialize()), trade)
    reference = windows.aggregate(trades)
    assert set(reference) == set(accs)
    assert all(is_symbol(symbol) for symbol, _ in accs)
    out = {}
    for key, acc in accs.items():
        row = windows.result(key[0], key[1], acc)
        assert row == reference[key]
        out[key] = (row, acc, id_ranges(agg_ids[key]))
    return out


def write_and_read_back(url: MysqlUrl, valid: list[bytes], hostile: Sequence[bytes] = ()) -> None:
    """Decode ``valid`` (the core must accept each) and ``hostile`` values, write what the job would, read it back."""
    accepted: list[Trade] = []
    beats: list[Heartbeat] = []
    rejected: list[QuarantinedMessage] = []
    for offset, raw in enumerate([*valid, *hostile]):
        try:
            decoded = decode(raw)
        except MalformedTrade as exc:
            assert offset >= len(valid), f"the core refused a value within its bounds: {exc}"
            stamp = datetime(1970, 1, 1) + timedelta(milliseconds=offset * 7_919_000_000_001 % 4_102_444_800_000)
            rejected.append(QuarantinedMessage(
                "t" * 249, 2**31 - 1, 2**63 - 1 - offset, stamp, raw.decode("utf-8", "replace"), str(exc)))
            continue
        if isinstance(decoded, Trade):
            accepted.append(decoded)
        else:
            beats.append(decoded)
    rows = accumulate(accepted)
    covered: dict[str, list[tuple[int, int]]] = {}  # as the job keeps it: per symbol, the union of the heartbeats'
    for beat in beats:
        covered[beat.symbol] = coverage.union([*covered.get(beat.symbol, []),
                                               (beat.covered_from_ms, beat.complete_before_ms - 1)])
    with connection.transaction(url) as cur:
        _strict(cur)
        for table in ("moving_averages", "pipeline_coverage", "quarantine"):
            cur.execute(f"DELETE FROM {table}")
        for key, (row, acc, ranges) in rows.items():
            state.write_windows(cur, [(row, acc, ranges)])
            _no_warnings(cur, f"window {key}")
        for symbol, ranges in covered.items():
            state.save_coverage(cur, symbol, ranges)
            _no_warnings(cur, f"coverage {symbol} {ranges}")
        for kept_message in rejected:
            quarantine.add_quarantine(cur, [kept_message])
            _no_warnings(cur, f"quarantine {kept_message.raw_value!r}")
    with connection.transaction(url) as cur:
        cur.execute("SELECT symbol, start_time, end_time, average_price, open_price, high_price, low_price, "
                    "close_price, volume, quote_volume, vwap, trade_count, agg_trade_count, price_sum, agg_id_ranges "
                    "FROM moving_averages")
        stored = {(r[0], int(r[1].replace(tzinfo=UTC).timestamp() * 1000)): r for r in cur.fetchall()}
        assert set(stored) == set(rows)
        for key, (row, acc, ranges) in rows.items():
            expected = (row.symbol, times.utc(row.start_ms), times.utc(row.end_ms), row.average_price,
                        row.open_price, row.high_price, row.low_price, row.close_price, row.volume,
                        row.quote_volume, row.vwap, row.trade_count, row.agg_trade_count, acc.price_sum,
                        coverage.render(ranges))
            got = stored[key]
            for name, want, have in zip(("symbol", "start_time", "end_time", "average_price", "open_price",
                                         "high_price", "low_price", "close_price", "volume", "quote_volume", "vwap",
                                         "trade_count", "agg_trade_count", "price_sum", "agg_id_ranges"),
                                        expected, got, strict=True):
                assert have == want and type(have) is type(want), f"{key} {name}: wrote {want!r}, read {have!r}"
        cur.execute("SELECT topic, kafka_partition, kafka_offset, kafka_timestamp, reason, raw_value FROM quarantine")
        kept = {r[2]: r for r in cur.fetchall()}
        for q in rejected:
            row = kept[q.offset]
            assert row[:4] == (q.topic, q.partition, q.offset, q.kafka_timestamp)
            assert row[5] == q.raw_value
            # Cut on purpose (said so with "...") when longer than the column; never by the server.
            assert row[4] == q.reason or (len(q.reason) > 255 and len(row[4]) <= 255
                                          and q.reason.startswith(row[4].removesuffix("...")))
        cur.execute("SELECT symbol, first_ms, last_ms FROM pipeline_coverage")
        assert sorted((s, int(a), int(b)) for s, a, b in cur.fetchall()) == sorted(
            (symbol, a, b) for symbol, ranges in covered.items() for a, b in ranges)


@pytest.fixture
def schema(mysql_url: MysqlUrl) -> MysqlUrl:
    """The writer's URL on a database with the newest schema (the fixture's schema owner migrated it already, or,
    where the fixture hands out one account for everything, it migrates here)."""
    with connection.transaction(mysql_url) as cur:
        cur.execute("SHOW TABLES LIKE 'moving_averages'")
        migrated = cur.fetchone() is not None
    if not migrated:
        migrations.migrate_schema(mysql_url)
    return mysql_url


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])
@given(values=batches())
def test_every_accepted_message_is_written_and_read_back_exactly(
        schema: MysqlUrl, values: tuple[list[bytes], list[bytes]]) -> None:
    write_and_read_back(schema, *values)


def _maximal(symbol: str, agg_id: int, t: int, first: int = MAX_ID - MAX_FILLS, last: int = MAX_ID - 1) -> bytes:
    return json.dumps({"v": 1, "type": "trade", "s": symbol, "a": agg_id, "p": format(MAX_DECIMAL, "f"),
                       "q": format(max_quantity(MAX_DECIMAL), "f"), "f": first, "l": last, "T": t, "m": True,
                       "M": True}).encode()


def test_a_window_of_many_maximal_trades_is_written_exactly(schema: MysqlUrl) -> None:
    """1,000 trades at the largest price, the largest notional and the widest id span (10^6 trades each) in the last
    minute before 2100, and 1,000 more in the first minute of 2017."""
    raws = [_maximal("Z" * 20, MAX_ID - 1 - i, LAST_WINDOW + i % 60_000) for i in range(1000)]
    raws += [_maximal("AB", i, FIRST_WINDOW + 59_999, first=i, last=i) for i in range(1000)]
    write_and_read_back(schema, raws)


def test_trade_count_of_1024_widest_trades_in_one_minute_fits_a_bigint(schema: MysqlUrl) -> None:
    """Found here: with ids spanning 0..2^53-1 per aggTrade, 1,024 of them summed to 2^63 (error 1264, the batch
    could never be written). The core now refuses an aggTrade of more than 10^6 trades (``MAX_FILLS``)."""
    raws = [_maximal("BTCUSDT", i, FIRST_WINDOW) for i in range(1024)]
    write_and_read_back(schema, raws)
