"""What the local stack (or the environment) offers: the services' addresses and accounts, and each service's
health as ``pipeline stack status`` and ``pipeline status`` show it."""

from __future__ import annotations

import dataclasses

from pipeline.settings import MysqlUrl


@dataclasses.dataclass(frozen=True)
class Connections:
    kafka_bootstrap: str
    mysql_url: MysqlUrl  # the writer
    backend: str
    mysql_admin_url: MysqlUrl | None = None  # the schema owner, if known
    mysql_read_url: MysqlUrl | None = None  # read-only, if known


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    name: str
    ok: bool
    detail: str
