"""A throwaway database for a benchmark run (the pipeline user may create ``pipeline_*`` databases)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql

from pipeline.settings import MysqlUrl


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yields a PIPELINE_MYSQL_URL for a new, empty database; drops it afterwards."""
    url = MysqlUrl.parse(os.environ["PIPELINE_MYSQL_URL"])
    name = f"pipeline_bench_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield url.with_database(name).render()
    finally:
        with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                             autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{name}`")
