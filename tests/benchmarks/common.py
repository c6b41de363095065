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
def fresh_database() -> Iterator[dict[str, str]]:
    """Yields the PIPELINE_MYSQL_*URL settings of a new, empty database (created and dropped by the schema owner,
    PIPELINE_MYSQL_ADMIN_URL, or the one account of PIPELINE_MYSQL_URL)."""
    names = ("PIPELINE_MYSQL_URL", "PIPELINE_MYSQL_ADMIN_URL", "PIPELINE_MYSQL_READ_URL")
    urls = {n: MysqlUrl.parse(os.environ[n]) for n in names if os.environ.get(n)}
    admin = urls.get("PIPELINE_MYSQL_ADMIN_URL", urls["PIPELINE_MYSQL_URL"])
    name = f"pipeline_bench_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield {n: u.with_database(name).render() for n, u in urls.items()}
    finally:
        with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, \
                conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{name}`")


def timed_pipeline(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``python -m pipeline <args>`` (start-up included) and its stdout; fails if it fails."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True,
                         check=True).stdout
    return time.perf_counter() - started, out
