"""The SparkSession of the job, given the connector's jars (``pipeline.compose`` resolves them from Maven Central).

pyspark wheels do not ship the Kafka connector; only the four jars the connector adds are put on the classpath
(Spark's own Scala, Hadoop and slf4j jars stay the ones pyspark ships). Nothing here reads the environment: every
value comes from the caller (``Settings``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

CONNECTOR_JARS = ("spark-sql-kafka-0-10", "spark-token-provider-kafka-0-10", "kafka-clients", "commons-pool2")


_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
# Expected on every start or stateful query; not actionable:
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
logger.aqe.name = org.apache.spark.sql.execution.streaming
logger.aqe.level = error
logger.resolve.name = org.apache.spark.sql.catalyst.analysis.ResolveWriteToStream
logger.resolve.level = error
"""


def _log4j2(cache_dir: Path) -> Path:
    path = cache_dir / "spark-log4j2.properties"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != _LOG4J2:
        path.write_text(_LOG4J2)
    return path


def under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started the JVM and this Python


def connector_given() -> bool:
    """spark-submit --packages / --jars already brought the connector (on a cluster, without mvn). Only
    spark-submit can have: run directly, there is no JVM yet whose configuration could say so."""
    if not under_spark_submit():
        return False
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connect to spark-submit's JVM, so SparkConf reads its configuration
    conf = SparkConf()
    return "spark-sql-kafka" in (conf.get("spark.jars.packages", "") or "") + (conf.get("spark.jars", "") or "")


def spark_session(jars: Sequence[Path], config_dir: Path, app_name: str = "pipeline", master: str | None = None,
                  driver_memory: str = "1g", log_level: str = "WARN", shuffle_partitions: int = 2,
                  default_master: str | None = None):
    """A session for the job. ``master`` always wins; else under spark-submit its ``--master`` is kept, and run
    directly ``default_master`` (PIPELINE_SPARK_MASTER) or ``local[2]`` (two cores: the machines this runs on in
    tests). ``jars``: the connector's, unless spark-submit gave them; ``config_dir``: where the log4j2 file is
    written."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master or not under_spark_submit():
        builder = builder.master(master or default_master or "local[2]")
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    session = (
        builder
        # Frozen into the checkpoint at the first run: keep it small on small machines (default 200).
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # Binance's fields "m" (buyer is maker) and "M" (best match) differ only in case.
        .config("spark.sql.caseSensitive", "true")
        # Decimal products and sums must never be rounded to fit: fail (null) rather than lose digits.
        .config("spark.sql.decimalOperations.allowPrecisionLoss", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{_log4j2(config_dir)}")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.streaming.minBatchesToRetain", "20")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel(log_level)
    return session
