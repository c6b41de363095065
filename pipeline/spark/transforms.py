"""The job's logic as small DataFrame -> DataFrame functions over one micro-batch (a static DataFrame).

    kafka rows --parse--> messages --classify--> reason? --+-- null, trade      --trades--> --islands--> driver
                                                           +-- null, heartbeat  --coverage--------------> driver
                                                           +-- not null         --quarantined-----------> driver

The job keeps no window state in Spark (no watermark, no state store): each batch is reduced to *islands*, per
(symbol, minute), runs of consecutive agg ids with the exact sums, counts and OHLC of their trades, and the
driver merges them into the windows MySQL holds (``pipeline.core.merging``). So a trade is never dropped because
another symbol, another producer or a catch-up ran ahead in event time (ADR-9).

    agg ids in one minute of a batch:  101 102 103 | 105 106   (104 was Binance's invalid record, or a gap)
    islands:                           101..103      105..106

The rounding of the two quotients happens once, in ``pipeline.core.windows.result``, on the driver, so Spark and
the reference aggregator cannot disagree about it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType

from pipeline.core.messages import (
    MAX_CLOCK_SKEW_MS,
    MAX_MESSAGE_CHARS,
    SCHEMA_VERSION,
    TEXT_REFUSED_PATTERN,
    TEXT_REFUSED_REASON,
)
from pipeline.core.trades import (
    DECIMAL_PATTERN,
    DECIMAL_PLACES_PATTERN,
    MAX_FILLS,
    MAX_ID,
    MAX_INTEGER_DIGITS,
    MAX_NOTIONAL,
    MAX_TIME_MS,
    MIN_TIME_MS,
    PLAIN_DECIMAL_PATTERN,
    PRICE_SCALE,
    SYMBOL_PATTERN,
)
from pipeline.core.windows import WINDOW_MS

PRICE = f"decimal({MAX_INTEGER_DIGITS + PRICE_SCALE},{PRICE_SCALE})"  # DECIMAL(18,8)
# The core's rules (``pipeline.core.trades``), applied here to the same effect: they keep every later step exact
# and overflow-free under ANSI mode, and every accepted trade writable to MySQL.

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
    StructField("from", LongType()),
    StructField("m", BooleanType()),
    StructField("M", BooleanType()),
    StructField("_corrupt", StringType()),  # the raw text when it is not JSON or a field has the wrong type
])


def parse(kafka_rows: DataFrame) -> DataFrame:
    """Kafka source rows -> the raw value, its coordinates, and the parsed message (null if not JSON)."""
    value = F.col("value").cast("string")
    return kafka_rows.select(
        # Epoch ms, not a timestamp: collect() would turn a timestamp into the driver's *local* time.
        "topic", "partition", "offset", F.unix_millis("timestamp").alias("kafka_timestamp_ms"),
        value.alias("raw_value"),
        # As strict as Python's json.loads where the text rule (TEXT_REFUSED_PATTERN) does not already decide.
        F.from_json(value, MESSAGE_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt",
                                            "allowSingleQuotes": "false", "allowNonNumericNumbers": "false"})
        .alias("msg"),
    )


def _exact_decimal(text: Column) -> Column:
    """The string as DECIMAL(18,8), or null when it is not a decimal as the core spells one (``DECIMAL_PATTERN``)
    or would be rounded to fit.

    The common spelling (``PLAIN_DECIMAL_PATTERN``: at most 10 integer digits and 8 places) is cast once, exactly.
    Any other has its places counted from its spelling, as the core counts them (``core.trades._decimal``), and is
    read to 8 places and to 18, which must agree: the cast alone would round a digit beyond 18 places away, and it
    trims spaces and control characters the core refuses."""
    narrow, wide = text.try_cast(PRICE), text.try_cast("decimal(38,18)")
    exponent = F.regexp_extract(text, DECIMAL_PLACES_PATTERN, 2)
    places = (F.length(F.regexp_extract(text, DECIMAL_PLACES_PATTERN, 1))
              - F.when(exponent == "", 0).otherwise(exponent.try_cast("int")))
    # Nested CASEs, not AND/OR: Spark hoists an expression repeated under an AND or OR out of it (subexpression
    # elimination) and would run every regular expression on every price; a CASE's branch is evaluated only when
    # reached, so the places are counted only of a string that is a decimal (DECIMAL_PATTERN is linear).
    exact = narrow.isNotNull() & (narrow == wide)
    return F.when(text.rlike(PLAIN_DECIMAL_PATTERN), narrow).when(
        text.rlike(DECIMAL_PATTERN), F.when((places <= PRICE_SCALE) & exact, narrow))


def _time_ok(t: Column) -> Column:
    return t.isNotNull() & (t >= MIN_TIME_MS) & (t < MAX_TIME_MS)


def _id_ok(i: Column) -> Column:
    return i.isNotNull() & (i >= 0) & (i < MAX_ID)


def classify(messages: DataFrame) -> DataFrame:
    """Adds ``price`` and ``quantity`` (exact decimals, null if not) and ``reason``: null for a valid trade or
    heartbeat, else why the message goes to quarantine.

    The decimals are columns of their own, computed once: inlined, each of the CASE's branches that reads them and
    then ``trades`` would cast the strings again (casts were once the largest cost of a batch)."""
    m = F.col("msg")
    messages = messages.withColumn("price", _exact_decimal(m["p"])).withColumn("quantity", _exact_decimal(m["q"]))
    price, qty = F.col("price"), F.col("quantity")
    is_trade, is_heartbeat = m["type"] == "trade", m["type"] == "heartbeat"
    symbol_ok = m["s"].isNotNull() & m["s"].rlike(SYMBOL_PATTERN)
    published = F.col("kafka_timestamp_ms")
    from_the_future = m["T"] > published + MAX_CLOCK_SKEW_MS
    reason = (
        F.when(F.length("raw_value") > MAX_MESSAGE_CHARS, F.lit(f"longer than {MAX_MESSAGE_CHARS:,} characters"))
        .when(F.col("raw_value").rlike(TEXT_REFUSED_PATTERN), F.lit(TEXT_REFUSED_REASON))
        .when(m.isNull() | F.col("raw_value").isNull() | m["_corrupt"].isNotNull(),
              F.lit("not a JSON object with fields of the schema's types"))
        .when(m["v"].isNull() | (m["v"] != SCHEMA_VERSION), F.lit("unsupported schema version"))
        .when(published.isNull() | (published <= 0), F.lit("message without a Kafka timestamp"))
        .when(is_heartbeat & ~symbol_ok, F.lit("heartbeat without a valid symbol"))
        .when(is_heartbeat & (~_time_ok(m["T"]) | m["from"].isNull() | (m["from"] < 0) | (m["from"] > m["T"])),
              F.lit("heartbeat needs 0 <= from <= T with T in 2017..2100"))
        .when(is_heartbeat & from_the_future,
              F.lit("heartbeat declares complete a time after it was published (beyond 5 minutes of clock skew)"))
        .when(is_heartbeat, F.lit(None))
        .when(~is_trade | m["type"].isNull(), F.lit("unknown message type"))
        .when(~symbol_ok, F.lit("trade without a valid symbol (2 to 20 of A-Z, 0-9)"))
        .when(~_id_ok(m["a"]), F.lit("agg id missing, negative or above 2^53"))
        .when(price.isNull() | (price < 0), F.lit("price is not a decimal with at most 8 places"))
        .when(qty.isNull() | (qty < 0), F.lit("quantity is not a decimal with at most 8 places"))
        .when(m["f"].isNull() | m["l"].isNull(), F.lit("trade ids missing"))
        .when(~_time_ok(m["T"]), F.lit("timestamp missing or not epoch ms between 2017 and 2100"))
        .when(from_the_future, F.lit("trade time after the message was published (beyond 5 minutes of clock skew)"))
        .when(price * qty >= MAX_NOTIONAL, F.lit("price x quantity is 10^15 or more"))
        .when(m["m"].isNull() | m["M"].isNull(), F.lit("buyer-is-maker or best-match flag missing"))
        .when((m["f"] == -1) | (m["l"] == -1), F.lit("invalid record: trade ids are -1"))
        .when(price == 0, F.lit("invalid record: price is 0"))
        .when(qty == 0, F.lit("invalid record: quantity is 0"))
        .when(~_id_ok(m["f"]) | ~_id_ok(m["l"]) | (m["l"] < m["f"]),
              F.lit("trade ids must satisfy 0 <= first <= last < 2^53"))
        .when(m["l"] - m["f"] >= MAX_FILLS, F.lit("an aggTrade of more than 10^6 trades (last - first + 1)"))
    )
    return messages.withColumn("reason", reason)


def coverage(classified: DataFrame) -> DataFrame:
    """Valid heartbeats: (symbol, covered_from_ms, complete_before_ms)."""
    m = F.col("msg")
    return classified.where(F.col("reason").isNull() & (m["type"] == "heartbeat")).select(
        m["s"].alias("symbol"), m["from"].alias("covered_from_ms"), m["T"].alias("complete_before_ms"))


def trades(classified: DataFrame, *extra: str) -> DataFrame:
    """Valid trades as typed columns, with the start of their minute (and ``extra`` columns of the message)."""
    m = F.col("msg")
    return classified.where(F.col("reason").isNull() & (m["type"] == "trade")).select(
        m["s"].alias("symbol"),
        m["a"].alias("agg_id"),
        "price",
        "quantity",
        m["f"].alias("first_trade_id"),
        m["l"].alias("last_trade_id"),
        m["T"].alias("event_ms"),
        m["m"].alias("buyer_is_maker"),
        (m["T"] - m["T"] % WINDOW_MS).alias("start_ms"),
        "partition", "offset", *extra,
    )


# Per (symbol, partition): from when until when a heartbeat of the batch first covers a time, and at which offset
# (``pipeline.core.coverage.earliest_cover``): data the trades are looked up in, never an expression per heartbeat.
COVER_SCHEMA = "symbol string, partition int, from_ms long, until_ms long, cover_offset long"


def flag_behind(trade_rows: DataFrame, pieces: DataFrame | None) -> DataFrame:
    """``trade_rows`` with ``after``: true for a trade that its symbol's partition holds *after* a heartbeat already
    declaring its time complete: whatever batch it lands in, it is late (ADR-9). Partitioned for ``islands``.

    ``pieces`` (``COVER_SCHEMA``; None: the batch has no heartbeat) are disjoint per (symbol, partition), so one
    pass sorted by time finds each trade's piece: the last one starting at or before the trade (a piece sorts
    before a trade of the same ms). The cost is a sort of the batch's trades and pieces, in the shuffle ``islands``
    needs anyway: bounded by the batch's size, whatever it holds (one OR term per heartbeat overflowed
    Spark's stack at 600 heartbeats)."""
    if pieces is None:
        return trade_rows.repartition("symbol", "start_ms").withColumn("after", F.lit(False))
    marks = pieces.select("symbol", "partition", F.col("from_ms").alias("event_ms"), F.lit(0).alias("kind"),
                          F.struct("until_ms", "cover_offset").alias("piece"))
    rows = trade_rows.withColumn("kind", F.lit(1)).withColumn("piece",
                                                              F.lit(None).cast(marks.schema["piece"].dataType))
    by_time = (Window.partitionBy("symbol", "partition").orderBy("event_ms", "kind")
               .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    piece = F.last("piece", ignorenulls=True).over(by_time)
    # By symbol alone: the window (symbol, partition) and every step of ``islands`` (symbol, minute, ...) reuse it.
    return (rows.unionByName(marks, allowMissingColumns=True).repartition("symbol")
            .withColumn("piece", piece).where(F.col("kind") == 1)
            .withColumn("after", F.coalesce((F.col("event_ms") < F.col("piece.until_ms"))
                                            & (F.col("offset") > F.col("piece.cover_offset")), F.lit(False)))
            .drop("kind", "piece"))


def islands(trade_rows: DataFrame) -> DataFrame:
    """Per (symbol, minute), each run of consecutive agg ids with its exact accumulator columns; the trades whose
    ``after`` column is true (``flag_behind``) are split off, in islands of their own: they are behind a heartbeat
    that covers them.

    One shuffle, ``flag_behind``'s (by symbol and minute, or by symbol when the batch has heartbeats): a redelivered
    (symbol, agg id) is always in the same minute, so the deduplication, the numbering and the grouping all reuse
    that partitioning.
    """
    by_minute = Window.partitionBy("symbol", "start_ms", "after").orderBy("agg_id")
    flagged = trade_rows if "after" in trade_rows.columns else flag_behind(trade_rows, None)
    return (
        flagged
        .dropDuplicates(["symbol", "start_ms", "after", "agg_id"])
        .withColumn("island", F.col("agg_id") - F.row_number().over(by_minute))
        .groupBy("symbol", "start_ms", "after", "island")
        .agg(
            F.count(F.lit(1)).alias("agg_trade_count"),
            F.sum(F.col("last_trade_id") - F.col("first_trade_id") + 1).alias("trade_count"),
            F.sum("price").alias("price_sum"),
            F.sum("quantity").alias("volume"),
            F.sum(F.col("price") * F.col("quantity")).alias("quote_volume"),
            F.min("agg_id").alias("open_id"),
            F.min_by("price", "agg_id").alias("open_price"),
            F.max("agg_id").alias("close_id"),
            F.max_by("price", "agg_id").alias("close_price"),
            F.max("price").alias("high_price"),
            F.min("price").alias("low_price"),
        )
        .drop("island")
    )
