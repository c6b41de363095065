"""Shared by the benchmarks: a throwaway database, and timing a ``pipeline`` command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def timed_pipeline(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``python -m pipeline <args>`` (start-up included) and its stdout; fails if it fails."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True,
                         check=True).stdout
    return time.perf_counter() - started, out
