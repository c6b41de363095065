"""The services a bench run measures against, as the command's context resolves them (the environment's, else the
local stack, started if need be and left running), and the topics and databases each measurement makes for itself
and removes at its end."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Self

from pipeline.adapters import kafka_io
from pipeline.adapters.mysql import admin
from pipeline.commands.context import Context
from pipeline.errors import ServiceError
from pipeline.services import procs
from pipeline.settings import MysqlUrl, Settings


@dataclasses.dataclass(frozen=True)
class Services:
    bootstrap: str
    writer: MysqlUrl
    admin: MysqlUrl
    reader: MysqlUrl
    settings: Settings  # with every connection filled in
    backend: str

    def env(self, topic: str, database: str, checkpoint: Path) -> dict[str, str]:
        """The environment of a ``pipeline`` child: the bench's settings, with this measurement's topic, database
        (every account) and checkpoint; of the bench's own environment only what is not a pipeline setting."""
        env = self.settings.child_environment(os.environ)
        env.update(PIPELINE_KAFKA_BOOTSTRAP=self.bootstrap, PIPELINE_TOPIC=topic,
                   PIPELINE_CHECKPOINT_DIR=str(checkpoint),
                   PIPELINE_MYSQL_URL=self.writer.with_database(database).render(),
                   PIPELINE_MYSQL_ADMIN_URL=self.admin.with_database(database).render(),
                   PIPELINE_MYSQL_READ_URL=self.reader.with_database(database).render())
        return env

    def sink(self, topic: str) -> kafka_io.TradeSink:
        return kafka_io.TradeSink(self.bootstrap, topic, options=self.settings.kafka_client_options())

    def pids(self) -> dict[str, int | None]:
        """Kafka's and MySQL's processes, when they run on this machine (for their memory)."""
        kafka_host, _, kafka_port = self.bootstrap.split(",")[0].rpartition(":")
        return {"kafka": procs.listening_pid(kafka_host, int(kafka_port)) if kafka_port.isdigit() else None,
                "mysql": procs.listening_pid(self.writer.host, self.writer.port)}


def connect(ctx: Context, progress: Callable[[str], None]) -> Services:
    """The services in the environment, else the local stack (started if it is not running, and left running)."""
    stack = ctx.stack()
    if stack.external() is None:
        progress("starting (or finding) the local stack: Kafka and MySQL")
    conns, started = stack.up()
    if started:
        progress("local stack started; it stays up (stop it with `pipeline stack down`)")
    settings = ctx.resolved()
    writer = settings.mysql_url
    if settings.kafka_bootstrap is None or writer is None:
        raise ServiceError("bench: no Kafka or MySQL to measure against")
    return Services(settings.kafka_bootstrap, writer, settings.mysql_admin_url or writer,
                    settings.read_url() or writer, settings, conns.backend)


class Resources:
    """Topics and databases made for one measurement, removed at the end of the ``with`` block."""

    def __init__(self, services: Services, run: str) -> None:
        self.services, self.run = services, run
        self.topics: list[str] = []
        self.databases: list[str] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def topic(self, part: str, partitions: int) -> str:
        name = f"bench.{part}.{self.run}"
        kafka_io.ensure_topic(self.services.bootstrap, name, partitions=partitions,
                              options=self.services.settings.kafka_client_options())
        self.topics.append(name)
        return name

    def database(self, part: str) -> str:
        """A fresh database with the current schema, made by the schema owner (as ``pipeline migrate`` would)."""
        name = f"pipeline_bench_{part}_{self.run}"
        self.databases.append(name)  # before it is made: whatever part of it was made is dropped
        admin.fresh_database(self.services.admin, name)
        return name

    def close(self) -> None:
        """Drop what was made; what cannot be is said on stderr, and the run goes on."""
        if self.databases:
            try:
                admin.drop_databases(self.services.admin, self.databases)
            except ServiceError as exc:
                print(f"bench: could not drop {', '.join(self.databases)}: {exc}", file=sys.stderr)
        if self.topics:
            try:
                kafka_io.delete_topics(self.services.bootstrap, self.topics,
                                       options=self.services.settings.kafka_client_options())
            except ServiceError as exc:
                print(f"bench: could not delete topics {', '.join(self.topics)}: {exc}", file=sys.stderr)
