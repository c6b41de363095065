"""The traffic the bench feeds the pipeline, generated: a day of archives (and the messages a replay of them sends),
live trades stamped now, and what a long outage leaves in the topic.

The outage's traffic is what live mode sends while ``pipeline process`` is down. Per symbol, a few trades a minute
(skewed: the busiest symbol trades 50 times as often as the quietest, which has most minutes empty) and, as the
poller sends them, one coverage heartbeat per symbol per minute, each from the session's start to the exchange's
time minus the lag (mid-minute), after every trade before it::

    BTCUSDT  t t t  t  t t  HB[start, 12:01:07)  t t t t  HB[start, 12:02:07) ...
    ADAUSDT         t       HB[start, 12:01:07)           HB[start, 12:02:07) ...

The last heartbeat of each symbol ends on a minute, so every minute that holds a trade is declared complete. Used
by the long-outage streaming test and by the bench's catch-up part: a batch holding 600 such heartbeats once
overflowed Spark's stack.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pipeline.core import messages, times, trades
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Trade
from pipeline.core.windows import WINDOW_MS

# Realistic skew: BTCUSDT trades about 50 times as often as ADAUSDT.
WEIGHTS = (("BTCUSDT", 50), ("ETHUSDT", 20), ("SOLUSDT", 12), ("BNBUSDT", 6), ("ADAUSDT", 1))
START_PRICE_E8 = {"BTCUSDT": 95_000_00000000, "ETHUSDT": 3_300_00000000, "SOLUSDT": 190_00000000,
                  "BNBUSDT": 700_00000000, "ADAUSDT": 90000000}
DAY = "2025-01-01"  # the generated archives' day: long past, so replay accepts them
DAY_MS = 86_400_000

# The outage's traffic
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "TRXUSDT", "LINKUSDT",
           "AVAXUSDT", "DOTUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "UNIUSDT", "ATOMUSDT", "XLMUSDT", "ETCUSDT",
           "FILUSDT", "APTUSDT")
TRADES_PER_SYMBOL_MINUTE = 1.825  # on average, as in measured outages (52,554 trades in 20 symbols x 24 h)
LAG_MS = 7_000  # a heartbeat declares complete what is older than the exchange's time minus this
SKEW = 50  # the busiest symbol trades SKEW times as often as the quietest


def decimal_e8(value: int) -> str:
    """An amount in units of 1e-8 as Binance spells it (8 places)."""
    return f"{value // 100_000_000}.{value % 100_000_000:08d}"


def trade_value(symbol: str, agg_id: int, price: str, quantity: str, first: int, last: int, time_ms: int,
                maker: bool) -> bytes:
    """A trade message as ``messages.encode_trade`` writes it, built as a string (no Decimal, no Trade object)."""
    return (f'{{"v":1,"type":"trade","s":"{symbol}","a":{agg_id},"p":"{price}","q":"{quantity}","f":{first},'
            f'"l":{last},"T":{time_ms},"m":{"true" if maker else "false"},"M":true}}').encode()


# ---------------------------------------------------------------------------------------------------- archives


@dataclasses.dataclass
class Dataset:
    """N trades over one day in archive rows (per symbol) and as the Kafka messages replay would send (time order,
    then one heartbeat per symbol covering the day)."""

    trades: int
    rows: dict[str, list[str]]
    messages: list[tuple[bytes, bytes]]

    def write_archives(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for symbol, rows in self.rows.items():
            (directory / f"{symbol}-aggTrades-{DAY}.csv").write_text("\n".join(rows) + "\n")
        return directory


def generate(count: int, seed: int = 11) -> Dataset:
    """Fast: strings built directly; checked against the real codecs (``_check_codecs``)."""
    rng = random.Random(seed)
    start_ms = times.ms(datetime.fromisoformat(DAY))
    total = sum(w for _, w in WEIGHTS)
    counts = {s: count * w // total for s, w in WEIGHTS}
    counts[WEIGHTS[0][0]] += count - sum(counts.values())
    rows: dict[str, list[str]] = {}
    timed: list[tuple[int, bytes, bytes]] = []
    for index, (symbol, _) in enumerate(WEIGHTS):
        n, key, price = counts[symbol], symbol.encode(), START_PRICE_E8[symbol]
        tick = max(1, price // 100_000)
        trade_id, agg_id = 1_000_000 * (index + 1), 100_000 * (index + 1)
        symbol_rows = rows[symbol] = []
        for i in range(n):
            t = start_ms + int((i + rng.random()) * DAY_MS / n)
            price = max(tick, price + tick * rng.randint(-3, 3))
            p, q = decimal_e8(price), decimal_e8(rng.randint(1, 200_000_000))
            last = trade_id + (0 if rng.random() < 0.7 else rng.randint(1, 4))
            maker = rng.random() < 0.5
            symbol_rows.append(f"{agg_id},{p},{q},{trade_id},{last},{t},{maker},True")
            timed.append((t, key, trade_value(symbol, agg_id, p, q, trade_id, last, t, maker)))
            agg_id, trade_id = agg_id + 1, last + 1
    timed.sort(key=lambda m: m[0])
    encoded = [(k, v) for _, k, v in timed]
    encoded += [messages.encode_heartbeat(Heartbeat(s, start_ms, start_ms + DAY_MS)) for s, _ in WEIGHTS]
    _check_codecs(rows, timed)
    return Dataset(count, rows, encoded)


def _check_codecs(rows: dict[str, list[str]], timed: list[tuple[int, bytes, bytes]]) -> None:
    """The generated messages are byte for byte what the producer would send for the archive rows."""
    firsts = {k: v for _, k, v in reversed(timed[:5000])}
    for symbol, symbol_rows in rows.items():
        trade = trades.parse_archive_row(symbol, symbol_rows[0].split(","))
        if symbol.encode() in firsts and messages.encode_trade(trade) != (symbol.encode(), firsts[symbol.encode()]):
            raise AssertionError(f"bench: generated message for {symbol} differs from encode_trade's")


# ---------------------------------------------------------------------------------------------------- live


class LiveTrades:
    """Trades as the live producer would publish them, over the 5 symbols skewed as WEIGHTS: each symbol's ids
    and price walk on from one trade to the next."""

    def __init__(self, seed: int = 5) -> None:
        self.rng = random.Random(seed)
        self.symbols, self.weights = [s for s, _ in WEIGHTS], [w for _, w in WEIGHTS]
        self.agg = dict.fromkeys(self.symbols, 1_000_000)
        self.trade_id = dict.fromkeys(self.symbols, 5_000_000)
        self.price = dict(START_PRICE_E8)

    def pick(self, k: int) -> list[str]:
        """The symbols of the next ``k`` trades."""
        return self.rng.choices(self.symbols, self.weights, k=max(0, k))

    def value(self, symbol: str, time_ms: int) -> bytes:
        """The next trade of ``symbol``, at ``time_ms``."""
        rng, price = self.rng, self.price
        price[symbol] = max(1000, price[symbol] + price[symbol] // 100_000 * rng.randint(-3, 3))
        first = self.trade_id[symbol]
        last = first + (0 if rng.random() < 0.7 else rng.randint(1, 4))
        value = trade_value(symbol, self.agg[symbol], decimal_e8(price[symbol]), decimal_e8(rng.randint(1, 10**8)),
                            first, last, time_ms, rng.random() < 0.5)
        self.agg[symbol], self.trade_id[symbol] = self.agg[symbol] + 1, last + 1
        return value


# ---------------------------------------------------------------------------------------------------- outage


@dataclasses.dataclass(frozen=True)
class Traffic:
    messages: list[Trade | Heartbeat]  # in the order live mode sends them (per symbol: by time)
    trades: list[Trade]
    heartbeats: int


def weights(symbols: int) -> list[float]:
    """Geometric from SKEW down to 1."""
    if symbols == 1:
        return [1.0]
    return [SKEW ** (1 - i / (symbols - 1)) for i in range(symbols)]


def live_outage(symbols: int, minutes: int, end_ms: int, seed: int = 18) -> Traffic:
    """``minutes`` of live-mode traffic of ``symbols`` symbols, ending at the minute ``end_ms`` falls in."""
    if not 1 <= symbols <= len(SYMBOLS) or minutes < 1:
        raise ValueError(f"1 to {len(SYMBOLS)} symbols and at least one minute")
    rng = random.Random(seed)
    end = end_ms - end_ms % WINDOW_MS
    start = end - minutes * WINDOW_MS
    names, shares = SYMBOLS[:symbols], weights(symbols)
    per_minute = [TRADES_PER_SYMBOL_MINUTE * symbols * w / sum(shares) for w in shares]
    by_symbol = {symbol: _outage_trades(rng, index, symbol, rate, start, end)
                 for index, (symbol, rate) in enumerate(zip(names, per_minute, strict=True))}
    sent: list[Trade | Heartbeat] = []
    position = dict.fromkeys(names, 0)
    heartbeats = 0
    for minute in range(1, minutes + 1):
        until = start + minute * WINDOW_MS + (LAG_MS if minute < minutes else 0)
        for symbol in names:
            symbol_trades, i = by_symbol[symbol], position[symbol]
            while i < len(symbol_trades) and symbol_trades[i].event_time_ms < until:
                sent.append(symbol_trades[i])
                i += 1
            position[symbol] = i
            sent.append(Heartbeat(symbol, start, until))
            heartbeats += 1
    return Traffic(sent, [t for s in names for t in by_symbol[s]], heartbeats)


def _outage_trades(rng: random.Random, index: int, symbol: str, rate: float, start: int, end: int) -> list[Trade]:
    """One symbol's trades from ``start`` to ``end``, ``rate`` a minute on average (Poisson)."""
    price, agg_id, trade_id = 1_000_000_000 * (index + 1), 7_000_000 * (index + 1), 90_000_000 * (index + 1)
    out, t = [], start + rng.expovariate(rate / WINDOW_MS)
    while t < end:
        price = max(1, price + rng.randint(-5, 5) * max(1, price // 100_000))
        last = trade_id + (0 if rng.random() < 0.7 else rng.randint(1, 4))
        out.append(Trade(symbol, agg_id, Decimal(price).scaleb(-8), Decimal(rng.randint(1, 10**9)).scaleb(-8),
                         trade_id, last, int(t), rng.random() < 0.5, True))
        agg_id, trade_id = agg_id + 1, last + 1
        t += rng.expovariate(rate / WINDOW_MS)
    return out
