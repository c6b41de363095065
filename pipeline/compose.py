"""The composition root: the one place that builds real adapters from ``Settings`` (connections from the
environment first, then from the running local stack): the Kafka producer, the SparkSession with its connector,
the streaming job. Commands, ``spark-submit``'s entry point and the demo call these, never each other; the core and
the Spark code below them import nothing from here, the CLI or the local stack."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.settings import DEFAULT_TRIGGER_SECONDS, Settings

if TYPE_CHECKING:  # imported where used: `pipeline --help` must not load Kafka or Spark
    from pipeline.adapters.kafka_io import TradeSink
    from pipeline.spark.writer import JobSummary


def trade_sink(settings: Settings) -> tuple[str, TradeSink]:
    """The Kafka bootstrap and a producer of the settings' topic (created, with its partitions, if missing)."""
    from pipeline.adapters import kafka_io
    from pipeline.services import stack

    bootstrap, options = stack.kafka_bootstrap(settings), settings.kafka_client_options()
    kafka_io.ensure_topic(bootstrap, settings.topic, settings.topic_partitions, options=options)
    return bootstrap, kafka_io.TradeSink(bootstrap, settings.topic, options=options)


def connector_jars(cache_dir: Path) -> list[Path]:
    """Spark's Kafka connector for the installed pyspark, resolved with mvn into the cache (once): only the jars
    the connector adds to what pyspark ships."""
    import pyspark

    from pipeline.services import maven
    from pipeline.spark.session import CONNECTOR_JARS

    version = pyspark.__version__
    jars = maven.resolve(cache_dir, f"spark-kafka-{version}",
                         [f"org.apache.spark:spark-sql-kafka-0-10_2.13:{version}"])
    return [j for j in jars if j.name.startswith(CONNECTOR_JARS)]


def spark_session(settings: Settings, app_name: str = "pipeline", master: str | None = None) -> Any:
    """The job's SparkSession as the settings say (master, driver memory, log level), with the connector."""
    from pipeline.spark import session

    jars = [] if session.connector_given() else connector_jars(settings.cache_dir)
    return session.spark_session(jars, settings.cache_dir, app_name, master, settings.spark_driver_memory,
                                 settings.spark_log_level, default_master=settings.spark_master)


def process(settings: Settings, until_idle: bool, trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
            stop: threading.Event | None = None) -> JobSummary:
    """``pipeline process``: the streaming job on the settings' services (environment first, then the stack)."""
    from pipeline.services import stack
    from pipeline.spark import job

    bootstrap, url = stack.kafka_bootstrap(settings), stack.mysql_url(settings)
    # The schema owner migrates an outdated schema on start, if known; else the writer tries (ensure_schema).
    settings = dataclasses.replace(settings, mysql_admin_url=stack.mysql_admin_url(settings))
    checkpoint = stack.checkpoint_dir(settings)
    print(f"process: {settings.topic} at {bootstrap} -> {url} (checkpoint {checkpoint})", file=sys.stderr)
    return job.run(settings, bootstrap, url, checkpoint, until_idle=until_idle, trigger_seconds=trigger_seconds,
                   stop=stop, spark=lambda: spark_session(settings))
