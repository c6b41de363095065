"""The composition root: the one place that builds real adapters from ``Settings`` (connections from the
environment first, then from the running local stack). Commands and the demo call these, never each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.settings import Settings

if TYPE_CHECKING:  # imported where used: `pipeline --help` must not load Kafka
    from pipeline.adapters.kafka_io import TradeSink


def trade_sink(settings: Settings) -> tuple[str, TradeSink]:
    """The Kafka bootstrap and a producer of the settings' topic (created, with its partitions, if missing)."""
    from pipeline.adapters import kafka_io
    from pipeline.services import stack

    bootstrap, options = stack.kafka_bootstrap(settings), settings.kafka_client_options()
    kafka_io.ensure_topic(bootstrap, settings.topic, settings.topic_partitions, options=options)
    return bootstrap, kafka_io.TradeSink(bootstrap, settings.topic, options=options)
