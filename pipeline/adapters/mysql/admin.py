"""Databases as the schema owner (``PIPELINE_MYSQL_ADMIN_URL``) makes and drops them: the demo's and the bench's
throwaway databases. A new database gets the newest schema."""

from __future__ import annotations

from collections.abc import Iterable

import pymysql

from pipeline.adapters.mysql.migrations import migrate_schema
from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl


def _execute(admin: MysqlUrl, statements: Iterable[str], what: str) -> None:
    try:
        with pymysql.connect(**admin.connect_arguments(database=False), autocommit=True) as conn, \
                conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    except pymysql.err.MySQLError as exc:
        raise ServiceError(f"could not {what} as {admin} (PIPELINE_MYSQL_ADMIN_URL must be the schema owner): "
                           f"{exc.args[-1]}") from exc


def fresh_database(admin: MysqlUrl, name: str) -> MysqlUrl:
    """Drop ``name`` if it exists, create it empty with the newest schema; returns the admin URL on it."""
    _execute(admin, [f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}`"], f"recreate database {name}")
    url = admin.with_database(name)
    migrate_schema(url, "PIPELINE_MYSQL_ADMIN_URL")
    return url


def drop_databases(admin: MysqlUrl, names: Iterable[str]) -> None:
    """Drop each of ``names`` that exists."""
    names = list(names)
    _execute(admin, [f"DROP DATABASE IF EXISTS `{n}`" for n in names], f"drop {', '.join(names)}")
