"""Connections, transactions and retries. A server that stops answering fails a statement after
``IO_TIMEOUT_SECONDS`` instead of hanging the job; ``with_retries`` waits out the failures in ``RETRYABLE``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import pymysql

from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl

log = logging.getLogger(__name__)
T = TypeVar("T")

IO_TIMEOUT_SECONDS = 30


def connect(url: MysqlUrl, database: bool = True, io_timeouts: bool = True) -> pymysql.connections.Connection:
    """A connection as the URL says, TLS included (``?ssl-mode=...``: a server without TLS is refused before the
    login is sent). ``io_timeouts=False`` is for schema migrations: an ALTER of a big table may run far longer than
    IO_TIMEOUT_SECONDS without a byte on the wire, and must not be cut."""
    timeout = IO_TIMEOUT_SECONDS if io_timeouts else None
    try:
        return pymysql.connect(**url.connect_arguments(database), autocommit=False, connect_timeout=10,
                               read_timeout=timeout, write_timeout=timeout, init_command="SET time_zone = '+00:00'")
    except pymysql.err.OperationalError as exc:
        raise ServiceError(f"MySQL at {url} is unreachable or refused the login: {exc.args[-1]}") from exc


@contextmanager
def transaction(url: MysqlUrl) -> Iterator[Any]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


class Connection:
    """One connection kept open from one transaction to the next (the job's batches: a login costs about 40 ms
    here, more than a small batch's statements). Checked with a ping before each use, so a connection the server
    closed meanwhile is opened again; closed after any failure, so a retry starts afresh."""

    def __init__(self, url: MysqlUrl) -> None:
        self.url = url
        self._conn: pymysql.connections.Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.ping(reconnect=False)
            except pymysql.err.MySQLError:
                with suppress(pymysql.err.Error, OSError):
                    conn.close()
                conn = None
        conn = conn or connect(self.url)
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            finally:
                conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class RowAppeared(ServiceError):
    """A row the transaction read as missing was inserted by another writer meanwhile (no gap lock held it off,
    as under READ COMMITTED): the whole transaction runs again and finds the row."""


# Failures that say nothing about the data: a deadlock or lock wait (the server rolled back), or a connection lost
# or refused. The whole transaction is run again; anything else (a refused login, a bad statement) is raised.
RETRYABLE = frozenset({1205, 1213, 1040, 1053, 2003, 2006, 2013, 2055})
RETRY_SECONDS = 900.0  # how long a batch keeps trying before the job stops with the cause


def retryable(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, RowAppeared):
            return True
        if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InternalError) and exc.args \
                and exc.args[0] in RETRYABLE:
            return True
        if isinstance(exc, pymysql.err.InterfaceError | ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def with_retries(url: MysqlUrl, work: Callable[[Any], T], what: str, deadline_s: float = RETRY_SECONDS,
                 sleep: Callable[[float], None] = time.sleep, connection: Connection | None = None) -> T:
    """``work(cursor)`` in one transaction (on ``connection``, kept open, if given), run again (after a backoff of
    1 s doubling to 30 s) while MySQL fails for a reason that says nothing about the data, for at most
    ``deadline_s``; every attempt is logged. ``work`` must be repeatable: a commit whose answer was lost is found by
    the next attempt (the batch ledger)."""
    started, delay, attempt = time.monotonic(), 1.0, 1
    while True:
        try:
            with (connection.transaction() if connection is not None else transaction(url)) as cur:
                return work(cur)
        except Exception as exc:
            if not retryable(exc) or time.monotonic() - started + delay > deadline_s:
                raise
            log.warning("%s: MySQL failed (%s); attempt %d again in %.0f s", what,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, attempt + 1, delay)
            sleep(delay)
            delay, attempt = min(delay * 2, 30.0), attempt + 1

