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
from tests.streaming.test_validation_agreement import hostile_message
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
    from pipeline.compose import Root
    from pipeline.settings import Settings

    session = Root(Settings.from_mapping({"PIPELINE_SPARK_MASTER": "local[2]"})).spark("pipeline-property-tests")
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


@st.composite
def mixed_batch(draw: st.DrawFn) -> list[tuple[int, bytes | None]]:
    """(partition, value): trades of two symbols (redelivered, invalid, out of order), hostile messages, and
    heartbeats anywhere, covering some of the trades' times from before or after them in their partition."""
    ts = draw(st.lists(trades(), min_size=1, max_size=30, unique_by=lambda t: (t.symbol, t.agg_id)))
    ts = [dataclasses.replace(t, symbol=("BTCUSDT", "ETHUSDT")[t.agg_id % 2]) for t in ts]
    home = {"BTCUSDT": 0, "ETHUSDT": 1}
    out: list[tuple[int, bytes | None]] = [(home[t.symbol], messages.encode_trade(t)[1]) for t in ts]
    for i in draw(st.lists(st.integers(0, 1000), max_size=5)):
        out.append((home[ts[i % len(ts)].symbol], messages.encode_trade(ts[i % len(ts)])[1]))
    for i in draw(st.lists(st.integers(0, 1000), max_size=2)):
        out.append((0, messages.encode_trade(invalid(ts[i % len(ts)]))[1]))
    out += [(draw(st.integers(0, 1)), v) for v in draw(st.lists(hostile_message(), max_size=3))]
    times = sorted(t.event_time_ms for t in ts)
    for _ in range(draw(st.integers(0, 4))):
        symbol = draw(st.sampled_from(["BTCUSDT", "ETHUSDT"]))
        start = draw(st.sampled_from(times)) - draw(st.integers(0, 120_000))
        end = draw(st.sampled_from(times)) + draw(st.integers(0, 120_000))
        beat = messages.encode_heartbeat(messages.Heartbeat(symbol, max(0, min(start, end)), max(start, end)))[1]
        out.insert(draw(st.integers(0, len(out))), (draw(st.sampled_from([home[symbol], home[symbol], 2])), beat))
    return draw(st.permutations(out)) if draw(st.booleans()) else out


def islands_key(islands: list[merging.Island]) -> list[tuple[Any, ...]]:
    return sorted((i.symbol, i.start_ms, i.first_id, i.last_id, dataclasses.astuple(i.acc)) for i in islands)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=mixed_batch())
def test_the_driver_path_and_the_spark_path_gather_the_same_batch(spark: Any, batch: list[tuple[int, bytes | None]],
                                                                   ) -> None:
    """A small batch computed in the driver by the core (``driver_gather``) holds exactly what Spark computes of it
    (``spark_gather``): fingerprint, heartbeats, quarantine (reason and raw text), islands, the trades behind a
    heartbeat that covers them, and the late candidates and exact-path trades the transaction may ask for."""
    from pipeline.spark import writer

    now = datetime(2026, 1, 2, tzinfo=UTC)
    offsets: dict[int, int] = {}
    rows = []
    for partition, value in batch:
        offsets[partition] = offsets.get(partition, -1) + 1
        rows.append((b"k", value, "t", partition, offsets[partition], now, 0))
    kafka = spark.createDataFrame(rows, KAFKA_SCHEMA)
    small = writer.small_batch(kafka, 1000)
    assert small is not None and len(small) == len(batch)
    driver = writer.driver_gather(kafka, small)
    parsed = writer.cached_columns(transforms.classify(transforms.parse(kafka))).persist()
    try:
        via_spark = writer.spark_gather(kafka, parsed, writer.batch_read(parsed))
        assert driver.read == via_spark.read
        assert sorted(driver.beats) == sorted(via_spark.beats)
        assert sorted(driver.quarantine, key=lambda q: (q.partition, q.offset)) == sorted(
            via_spark.quarantine, key=lambda q: (q.partition, q.offset))
        assert islands_key(driver.islands) == islands_key(via_spark.islands)
        assert islands_key(driver.behind) == islands_key(via_spark.behind)
        keys = {(i.symbol, i.start_ms) for i in driver.islands + driver.behind}
        assert sorted(driver.candidates(keys), key=lambda c: (c.partition, c.offset)) == sorted(
            via_spark.candidates(keys), key=lambda c: (c.partition, c.offset))
        # (best_match does not enter a window: the Spark path does not read it back)
        exact_driver, exact_spark = driver.exact_trades(keys), via_spark.exact_trades(keys)
        assert {k: sorted(dataclasses.astuple(t)[:-1] for t in v) for k, v in exact_driver.items()} == {
            k: sorted(dataclasses.astuple(t)[:-1] for t in v) for k, v in exact_spark.items()}
    finally:
        parsed.unpersist()
