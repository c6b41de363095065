"""The traffic a long outage leaves in the topic: what live mode sends while ``pipeline process`` is down.

Per symbol, a few trades a minute (skewed: the busiest symbol trades 50 times as often as the quietest, which
has most minutes empty) and, as the poller sends them, one coverage heartbeat per symbol per minute, each from the
session's start to the exchange's time minus the lag (mid-minute), after every trade before it::

    BTCUSDT  t t t  t  t t  HB[start, 12:01:07)  t t t t  HB[start, 12:02:07) ...
    ADAUSDT         t       HB[start, 12:01:07)           HB[start, 12:02:07) ...

The last heartbeat of each symbol ends on a minute, so every minute that holds a trade is declared complete.
Used by the long-outage streaming test and by ``pipeline bench`` (its catch-up part); issue 18 found that a batch
holding 600 such heartbeats overflowed Spark's stack.
"""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal

from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Trade
from pipeline.core.windows import WINDOW_MS

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "TRXUSDT", "LINKUSDT",
           "AVAXUSDT", "DOTUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "UNIUSDT", "ATOMUSDT", "XLMUSDT", "ETCUSDT",
           "FILUSDT", "APTUSDT")
TRADES_PER_SYMBOL_MINUTE = 1.825  # on average: issue 18's measured outages (52,554 trades in 20 symbols x 24 h)
LAG_MS = 7_000  # a heartbeat declares complete what is older than the exchange's time minus this
SKEW = 50  # the busiest symbol trades SKEW times as often as the quietest


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
    by_symbol: dict[str, list[Trade]] = {}
    for index, (symbol, rate) in enumerate(zip(names, per_minute, strict=True)):
        price, agg_id, trade_id = 1_000_000_000 * (index + 1), 7_000_000 * (index + 1), 90_000_000 * (index + 1)
        trades, t = [], start + rng.expovariate(rate / WINDOW_MS)
        while t < end:
            price = max(1, price + rng.randint(-5, 5) * max(1, price // 100_000))
            last = trade_id + (0 if rng.random() < 0.7 else rng.randint(1, 4))
            trades.append(Trade(symbol, agg_id, Decimal(price).scaleb(-8), Decimal(rng.randint(1, 10**9)).scaleb(-8),
                                trade_id, last, int(t), rng.random() < 0.5, True))
            agg_id, trade_id = agg_id + 1, last + 1
            t += rng.expovariate(rate / WINDOW_MS)
        by_symbol[symbol] = trades
    messages: list[Trade | Heartbeat] = []
    position = dict.fromkeys(names, 0)
    heartbeats = 0
    for minute in range(1, minutes + 1):
        until = start + minute * WINDOW_MS + (LAG_MS if minute < minutes else 0)
        for symbol in names:
            trades, i = by_symbol[symbol], position[symbol]
            while i < len(trades) and trades[i].event_time_ms < until:
                messages.append(trades[i])
                i += 1
            position[symbol] = i
            messages.append(Heartbeat(symbol, start, until))
            heartbeats += 1
    return Traffic(messages, [t for s in names for t in by_symbol[s]], heartbeats)
