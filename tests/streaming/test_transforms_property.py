"""The Spark transforms and the reference aggregator agree on any trades (hypothesis + chispa, static DataFrames)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import merging, messages, windows
from pipeline.core.trades import Trade
from pipeline.spark import transforms
from pipeline.spark.writer import collect_islands
from tests.unit.strategies import trades

WINDOW_SCHEMA = (
    "symbol string, start_ms long, end_ms long, average_price decimal(38,18), open_price decimal(18,8), "
    "high_price decimal(18,8), low_price decimal(18,8), close_price decimal(18,8), volume decimal(38,8), "
    "quote_volume decimal(38,16), vwap decimal(38,18), trade_count long, agg_trade_count long"
)
KAFKA_SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                "timestampType int")


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pipeline.compose import spark_session
    from pipeline.settings import Settings

    session = spark_session(Settings.from_mapping({}), app_name="pipeline-property-tests",
                            master="local[2]")
    yield session


def kafka_rows(spark: Any, values: list[tuple[bytes, bytes]]) -> Any:
    now = datetime(2026, 1, 2, tzinfo=UTC)  # published after every trade here (a later time is quarantined)
    return spark.createDataFrame([(k, v, "t", 0, i, now, 0) for i, (k, v) in enumerate(values)], KAFKA_SCHEMA)


def spark_windows(spark: Any, values: list[tuple[bytes, bytes]]) -> Any:
    """The job's path for one batch into an empty store: Spark's islands, merged by the writer's core logic."""
    classified = transforms.classify(transforms.parse(kafka_rows(spark, values)))
    islands, behind = collect_islands(transforms.trades(classified))
    assert not behind  # no heartbeat covers a trade before it here
    outcomes, exact = merging.plan({}, {}, islands)
    assert not exact  # one batch into an empty store: nothing was held before
    rows = [windows.result(k[0], k[1], o.acc) for k, o in outcomes.items()]
    return spark.createDataFrame([dataclasses.astuple(r) for r in rows], WINDOW_SCHEMA)


def reference_windows(spark: Any, ts: list[Trade]) -> Any:
    rows = windows.aggregate(ts).values()
    return spark.createDataFrame([dataclasses.astuple(r) for r in rows], WINDOW_SCHEMA)


def invalid(trade: Trade) -> Trade:
    return dataclasses.replace(trade, agg_id=trade.agg_id + 10**13, price=Decimal(0), quantity=Decimal(0),
                               first_trade_id=-1, last_trade_id=-1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=st.lists(trades(), min_size=1, max_size=40, unique_by=lambda t: (t.symbol, t.agg_id)),
       repeats=st.lists(st.integers(min_value=0, max_value=1000), max_size=6),
       invalids=st.lists(st.integers(min_value=0, max_value=1000), max_size=3),
       heartbeat=st.booleans())
def test_spark_and_the_reference_agree(spark: Any, ts: list[Trade], repeats: list[int], invalids: list[int],
                                       heartbeat: bool) -> None:
    values = [messages.encode_trade(t) for t in ts]
    values += [messages.encode_trade(ts[i % len(ts)]) for i in repeats]  # redelivered: counted once
    values += [messages.encode_trade(invalid(ts[i % len(ts)])) for i in invalids]  # Binance's invalid records
    if heartbeat:  # heartbeats never become rows
        values.append(messages.encode_heartbeat(messages.Heartbeat(ts[0].symbol, 0, max(t.event_time_ms for t in ts))))
    expected_input = ts + [invalid(ts[i % len(ts)]) for i in invalids]
    assert_df_equality(spark_windows(spark, values), reference_windows(spark, expected_input),
                       ignore_row_order=True)


def test_a_worked_example_through_spark(spark: Any) -> None:
    minute = 1_767_268_860_000  # 2026-01-01T12:01:00Z
    t = [Trade("BTCUSDT", 7, Decimal("10"), Decimal("1"), 100, 101, minute + 500, False, True),
         Trade("BTCUSDT", 5, Decimal("30"), Decimal("2"), 90, 90, minute + 100, True, True),
         Trade("BTCUSDT", 6, Decimal("20"), Decimal("3"), 95, 99, minute + 200, False, True)]
    got = spark_windows(spark, [messages.encode_trade(x) for x in t]).collect()
    assert len(got) == 1
    row = got[0]
    # Worked by hand (as in tests/unit/test_windows.py): open 30 (lowest agg id 5), close 10 (highest, 7).
    assert (row["open_price"], row["close_price"], row["high_price"], row["low_price"]) == (30, 10, 30, 10)
    assert row["average_price"] == Decimal("20") and row["vwap"] == Decimal("21.666666666666666667")
    assert (row["volume"], row["quote_volume"], row["trade_count"], row["agg_trade_count"]) == (6, 130, 8, 3)
