"""The composition root: the one place that builds real adapters from ``Settings``. Connections are resolved once
(the environment first, then the running local stack) and handed to commands as a ``commands.context.Context``;
nothing below imports this module or ``services.stack``. Its callers are the entry points only: ``pipeline.cli``,
``spark-submit``'s ``pipeline.submit`` and the bench's Spark floor."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl, Settings

if TYPE_CHECKING:  # imported where used: `pipeline --help` must not load Kafka or Spark
    from pipeline.adapters.binance import BinanceClient
    from pipeline.adapters.kafka_io import TradeSink
    from pipeline.services.stack import LocalStack


class Root:
    """Implements ``commands.context.Context`` over real services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def _stack_settings(self) -> Settings:
        """The settings with what the environment left out filled in from the running local stack (read once)."""
        from pipeline.services import stack

        if stack.external(self.settings) is not None:
            return self.settings
        state = stack.read_state(self.settings)
        if state is None:
            return self.settings
        conns = stack.connections(self.settings)
        return self.settings.with_connections(conns.kafka_bootstrap, conns.mysql_url, conns.mysql_admin_url,
                                              conns.mysql_read_url)

    def _missing(self, variable: str) -> ServiceError:
        return ServiceError(f"{variable} is not set and no local stack is running: run `pipeline stack up` or set it")

    def kafka_bootstrap(self) -> str:
        bootstrap = self._stack_settings.kafka_bootstrap
        if bootstrap is None:
            raise self._missing("PIPELINE_KAFKA_BOOTSTRAP")
        return bootstrap

    def mysql_url(self) -> MysqlUrl:
        url = self._stack_settings.mysql_url
        if url is None:
            raise self._missing("PIPELINE_MYSQL_URL")
        return url

    def mysql_read_url(self) -> MysqlUrl:
        url = self._stack_settings.read_url()
        if url is None:
            raise self._missing("PIPELINE_MYSQL_READ_URL / PIPELINE_MYSQL_URL")
        return url

    def mysql_admin_url(self) -> MysqlUrl | None:
        return self._stack_settings.mysql_admin_url

    def checkpoint(self, name: str = "checkpoint") -> Path | str:
        from pipeline.services import stack

        return stack.checkpoint_dir(self.settings, name)

    def resolved(self) -> Settings:
        return dataclasses.replace(self._stack_settings, kafka_bootstrap=self.kafka_bootstrap(),
                                   mysql_url=self.mysql_url(), checkpoint_dir=self.checkpoint())

    def sink(self, topic: str | None = None) -> TradeSink:
        from pipeline.adapters import kafka_io

        bootstrap, options = self.kafka_bootstrap(), self.settings.kafka_client_options()
        topic = topic or self.settings.topic
        kafka_io.ensure_topic(bootstrap, topic, self.settings.topic_partitions, options=options)
        return kafka_io.TradeSink(bootstrap, topic, options=options)

    def exchange(self, base_url: str, *, weight_budget: int | None = None, timeout_s: tuple[float, float] | None = None,
                 sleep: Callable[[float], None] | None = None) -> BinanceClient:
        from pipeline.adapters.binance import BinanceClient, make_session

        given: dict[str, Any] = {"weight_budget": weight_budget, "timeout_s": timeout_s, "sleep": sleep}
        return BinanceClient(session=make_session(), base_url=base_url,
                             **{k: v for k, v in given.items() if v is not None})

    def spark(self, app_name: str = "pipeline") -> Any:
        from pipeline.spark import session

        s = self.settings
        jars = [] if session.connector_given() else connector_jars(s.cache_dir)
        return session.spark_session(jars, s.cache_dir, app_name, None, s.spark_driver_memory, s.spark_log_level,
                                     default_master=s.spark_master)

    def derive(self, settings: Settings) -> Root:
        return Root(settings)

    def stack(self) -> LocalStack:
        from pipeline.services.stack import LocalStack

        return LocalStack(self.settings)


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
