"""Hypothesis strategies for Binance aggTrades: valid ones, shaped like Binance's own."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

from pipeline.core.trades import Trade

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT")
# 8 decimal places, below 10^10: what Binance spot sends and what DECIMAL(18, 8) holds.
decimals = st.integers(min_value=1, max_value=10**12).map(lambda n: Decimal(n).scaleb(-8))
times_ms = st.integers(min_value=1_500_000_000_000, max_value=1_500_000_000_000 + 10 * 60_000)


@st.composite
def trades(draw: st.DrawFn, symbol: str | None = None) -> Trade:
    first = draw(st.integers(min_value=0, max_value=10**9))
    return Trade(
        symbol=symbol or draw(st.sampled_from(SYMBOLS)),
        agg_id=draw(st.integers(min_value=0, max_value=10**12)),
        price=draw(decimals),
        quantity=draw(decimals),
        first_trade_id=first,
        last_trade_id=first + draw(st.integers(min_value=0, max_value=50)),
        event_time_ms=draw(times_ms),
        buyer_is_maker=draw(st.booleans()),
        best_match=draw(st.booleans()),
    )


def rest_payload(trade: Trade) -> dict[str, object]:
    return {"a": trade.agg_id, "p": format(trade.price, "f"), "q": format(trade.quantity, "f"),
            "f": trade.first_trade_id, "l": trade.last_trade_id, "T": trade.event_time_ms,
            "m": trade.buyer_is_maker, "M": trade.best_match}
