"""The job's logic as small DataFrame -> DataFrame functions (each testable with a static DataFrame).

    kafka rows --parse--> messages --classify--> reason? --+-- reason is null  --to_events--> events --aggregate-->
                                                           +-- reason not null --> quarantine

``aggregate`` produces the reference aggregator's *accumulator* per (symbol, minute): exact sums, counts,
OHLC and the highest event time. The rounding of the two quotients happens once, in
``pipeline.core.windows.result``, on the driver (see ``pipeline.spark.job``), so Spark and the reference cannot
disagree about it.

Heartbeats (``{"type": "heartbeat", "T": t}``) travel as events of the empty symbol with event time
``t + watermark delay``: Spark's watermark (max event time - delay) then reaches exactly ``t``, and every window
ending by ``t`` closes, even when no trade arrives.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType

PRICE = "decimal(18,8)"
SCHEMA_VERSION = 1
HEARTBEAT_SYMBOL = ""

MESSAGE_SCHEMA = StructType([
    StructField("v", IntegerType()),
    StructField("type", StringType()),
    StructField("s", StringType()),
    StructField("a", LongType()),
    StructField("p", StringType()),
    StructField("q", StringType()),
    StructField("f", LongType()),
    StructField("l", LongType()),
    StructField("T", LongType()),
    StructField("m", BooleanType()),
    StructField("_corrupt", StringType()),  # the raw text when it is not JSON or a field has the wrong type
])


def parse(kafka_rows: DataFrame) -> DataFrame:
    """Kafka source rows -> the raw value, its coordinates, and the parsed message (null if not JSON)."""
    value = F.col("value").cast("string")
    return kafka_rows.select(
        "topic", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
        value.alias("raw_value"),
        F.from_json(value, MESSAGE_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
        .alias("msg"),
    )


def _exact_decimal(text: Column) -> Column:
    """The string as DECIMAL(18,8), or null when it is not a number or would be rounded to fit."""
    narrow, wide = text.try_cast(PRICE), text.try_cast("decimal(38,18)")
    return F.when(narrow.isNotNull() & (narrow == wide), narrow)


def classify(messages: DataFrame) -> DataFrame:
    """Adds ``reason``: null for a valid trade or heartbeat, else why the message goes to quarantine."""
    m = F.col("msg")
    price, qty = _exact_decimal(m["p"]), _exact_decimal(m["q"])
    is_trade, is_heartbeat = m["type"] == "trade", m["type"] == "heartbeat"
    reason = (
        F.when(m.isNull() | F.col("raw_value").isNull() | m["_corrupt"].isNotNull(),
               F.lit("not a JSON object with fields of the schema's types"))
        .when(m["v"].isNull() | (m["v"] != SCHEMA_VERSION), F.lit("unsupported schema version"))
        .when(is_heartbeat & (m["T"].isNull() | (m["T"] <= 0)), F.lit("heartbeat without a valid T"))
        .when(is_heartbeat, F.lit(None))
        .when(~is_trade | m["type"].isNull(), F.lit("unknown message type"))
        .when(m["s"].isNull() | (m["s"] == ""), F.lit("trade without a symbol"))
        .when(m["a"].isNull() | (m["a"] < 0), F.lit("agg id missing or negative"))
        .when(price.isNull() | (price < 0), F.lit("price is not a decimal with at most 8 places"))
        .when(qty.isNull() | (qty < 0), F.lit("quantity is not a decimal with at most 8 places"))
        .when(m["f"].isNull() | m["l"].isNull(), F.lit("trade ids missing"))
        .when(m["T"].isNull() | (m["T"] <= 0), F.lit("timestamp missing or not positive"))
        .when(m["m"].isNull(), F.lit("buyer-is-maker flag missing"))
        .when((m["f"] == -1) | (m["l"] == -1), F.lit("invalid record: trade ids are -1"))
        .when(price == 0, F.lit("invalid record: price is 0"))
        .when(qty == 0, F.lit("invalid record: quantity is 0"))
        .when((m["f"] < 0) | (m["l"] < m["f"]), F.lit("trade ids must satisfy 0 <= first <= last"))
    )
    return messages.withColumn("reason", reason)


def quarantined(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("reason").isNotNull()).select(
        "topic", "partition", "offset", "kafka_timestamp", "raw_value", "reason")


def to_events(classified: DataFrame, watermark_seconds: int) -> DataFrame:
    """Valid trades and heartbeats as uniform events with an event-time column."""
    m = F.col("msg")
    heartbeat = m["type"] == "heartbeat"
    event_ms = F.when(heartbeat, m["T"] + F.lit(watermark_seconds * 1000)).otherwise(m["T"])
    return classified.where(F.col("reason").isNull()).select(
        F.when(heartbeat, F.lit(HEARTBEAT_SYMBOL)).otherwise(m["s"]).alias("symbol"),
        F.when(heartbeat, m["T"]).otherwise(m["a"]).alias("agg_id"),
        F.when(heartbeat, F.lit(0).cast(PRICE)).otherwise(_exact_decimal(m["p"])).alias("price"),
        F.when(heartbeat, F.lit(0).cast(PRICE)).otherwise(_exact_decimal(m["q"])).alias("quantity"),
        F.when(heartbeat, F.lit(0)).otherwise(m["l"] - m["f"] + 1).alias("trades"),
        F.when(heartbeat, F.lit(0)).otherwise(F.lit(1)).alias("is_trade"),
        event_ms.alias("event_ms"),
        F.timestamp_millis(event_ms).alias("event_time"),
    )


def aggregate(events: DataFrame, watermark_seconds: int | None) -> DataFrame:
    """Deduplicate (symbol, agg id) and aggregate 1-minute tumbling windows into accumulator columns.

    ``watermark_seconds`` None: a static (batch) aggregation, for tests and backfills; otherwise streaming with a
    watermark, where a redelivered trade is dropped while the watermark still remembers it, and after that is late.
    """
    if watermark_seconds is None:
        deduped = events.dropDuplicates(["symbol", "agg_id"])
    else:
        deduped = (events.withWatermark("event_time", f"{watermark_seconds} seconds")
                   .dropDuplicatesWithinWatermark(["symbol", "agg_id"]))
    # Heartbeats form their own group (the empty symbol), so trade groups hold trades only.
    return (
        deduped.groupBy(F.window("event_time", "1 minute").alias("window"), "symbol")
        .agg(
            F.sum("is_trade").alias("agg_trade_count"),
            F.sum("trades").alias("trade_count"),
            F.sum("price").alias("price_sum"),
            F.sum("quantity").alias("volume"),
            F.sum(F.col("price") * F.col("quantity")).alias("quote_volume"),
            F.min_by("price", "agg_id").alias("open_price"),
            F.min("agg_id").alias("open_id"),
            F.max_by("price", "agg_id").alias("close_price"),
            F.max("agg_id").alias("close_id"),
            F.max("price").alias("high_price"),
            F.min("price").alias("low_price"),
            F.max("event_ms").alias("max_event_ms"),
        )
        .select(
            "symbol",
            (F.unix_millis(F.col("window.start"))).alias("start_ms"),
            "agg_trade_count", "trade_count", "price_sum", "volume", "quote_volume", "open_id", "open_price",
            "close_id", "close_price", "high_price", "low_price", "max_event_ms",
        )
    )
