"""What a command is handed by the composition root (``pipeline.compose``): the settings with their connections
resolved once (the environment first, then the running local stack), and the adapters built from them. Commands
are written against this protocol and never build connections or read the environment themselves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.services.connections import Connections, ServiceStatus
from pipeline.settings import MysqlUrl, Settings

if TYPE_CHECKING:
    from pipeline.adapters.binance import BinanceClient
    from pipeline.adapters.kafka_io import TradeSink


class Stack(Protocol):
    """The local stack of a context's settings (``services.stack.LocalStack``)."""

    def up(self) -> tuple[Connections, bool]: ...
    def down(self) -> bool: ...
    def status(self) -> tuple[str, list[ServiceStatus]]: ...
    def connections(self) -> Connections: ...
    def external(self) -> Connections | None: ...


class Context(Protocol):
    settings: Settings  # as configured: connections may be missing (a command that needs none never asks)

    def kafka_bootstrap(self) -> str:
        """Kafka's bootstrap servers; the security options are ``settings.kafka_client_options()``."""

    def mysql_url(self) -> MysqlUrl:
        """The writer's account."""

    def mysql_read_url(self) -> MysqlUrl:
        """The read-only account (else the writer's)."""

    def mysql_admin_url(self) -> MysqlUrl | None:
        """The schema owner, if known."""

    def checkpoint(self, name: str = "checkpoint") -> Path | str:
        """Where a streaming query keeps its checkpoint."""

    def resolved(self) -> Settings:
        """The settings with every connection filled in, for a child process's environment or the Spark job."""

    def sink(self, topic: str | None = None) -> TradeSink:
        """A producer of ``topic`` (default: the settings'), created with the settings' partitions if missing."""

    def exchange(self, base_url: str, *, weight_budget: int | None = None, timeout_s: tuple[float, float] | None = None,
                 sleep: Callable[[float], None] | None = None) -> BinanceClient:
        """A Binance REST client (live, a simulated exchange or cassette playback, by ``base_url``)."""

    def spark(self, app_name: str = "pipeline") -> Any:
        """The SparkSession as the settings say (master, driver memory, log level), with the Kafka connector."""

    def derive(self, settings: Settings) -> Context:
        """A context over other settings (a private topic, the demo's own database): resolved afresh."""

    def stack(self) -> Stack:
        """The local stack (start, stop, status) for ``pipeline stack`` and the demo."""
