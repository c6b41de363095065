"""Two writers of one window that has no row yet, at the isolation level a server may be set to.

The stream's batch and a backfill's batch both touch BTCUSDT 12:00; each loads the window (no row), then writes
it. Under REPEATABLE READ the loads' gap locks make the two inserts deadlock and one batch runs again; under READ
COMMITTED (a common server setting) there are no gap locks: the second writer must still find out that a row
appeared, never overwrite it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from decimal import Decimal

import pytest

from pipeline.adapters.mysql import connection
from pipeline.adapters.mysql.store import MysqlWindowStore
from pipeline.core import coverage, merging, unit_of_work
from pipeline.core.batch import BatchRead, Delivered, gather
from pipeline.core.messages import Heartbeat, encode_heartbeat, encode_trade
from pipeline.core.trades import Trade
from pipeline.settings import MysqlUrl
from tests.reference_rows import assert_rows_match

MINUTE = 1_800_000_000_000 - 1_800_000_000_000 % 60_000


def _trades(first_id: int, count: int) -> list[Trade]:
    return [Trade("BTCUSDT", first_id + i, Decimal("100.5") + i % 7, Decimal("0.25"), 10 * (first_id + i),
                  10 * (first_id + i), MINUTE + (first_id + i) % 60_000, i % 2 == 0, True) for i in range(count)]


def _gathered(topic: str, trades: list[Trade]) -> object:
    """The trades, then a heartbeat for the minute before theirs (both writers add the same coverage range)."""
    values = [*(encode_trade(t)[1] for t in trades), encode_heartbeat(Heartbeat("BTCUSDT", MINUTE - 60_000, MINUTE))[1]]
    delivered = [Delivered(topic, 0, offset, MINUTE + 90_000, v) for offset, v in enumerate(values)]
    digest = hashlib.sha256(f"{topic} {len(trades)}".encode()).hexdigest()
    return gather(BatchRead(len(values), f"{topic}/0:0-{len(values) - 1}", digest), delivered, lambda refused: [])


class _PausedAfterLoad(MysqlWindowStore):
    """Waits for the other writer after its first load of the windows, so both have read before either writes."""

    def __init__(self, cur: object, run: str, barrier: threading.Barrier, first: list[bool]) -> None:
        super().__init__(cur, run, "stream")
        self.barrier, self.first = barrier, first

    def load_windows(self, keys: Iterable[merging.Key]) -> dict[merging.Key, merging.Stored]:
        found = super().load_windows(keys)
        if self.first[0]:
            self.first[0] = False
            self.barrier.wait()
        return found


def _race(url: MysqlUrl, level: str, stream: list[Trade], backfill: list[Trade]) -> None:
    """The two batches, each in its own transaction at ``level``, both loading before either writes."""
    barrier, failures = threading.Barrier(2, timeout=30), []

    def writer(run: str, topic: str, trades: list[Trade]) -> None:
        g, first = _gathered(topic, trades), [True]

        def work(cur: object) -> object:
            cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {level}")  # type: ignore[attr-defined]
            cur.execute("SELECT @@tx_isolation")  # type: ignore[attr-defined]
            assert cur.fetchone()[0] == level.replace(" ", "-")  # type: ignore[attr-defined]
            return unit_of_work.apply(_PausedAfterLoad(cur, run, barrier, first), g, 0)  # type: ignore[arg-type]

        try:
            connection.with_retries(url, work, run, deadline_s=60)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=("stream-run", "trades", stream)),
               threading.Thread(target=writer, args=("backfill-run", "backfill", backfill))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not failures


LEVELS = pytest.mark.parametrize("level", ["READ COMMITTED", "REPEATABLE READ"])


@LEVELS
def test_stream_and_backfill_writing_one_new_window_both_land(mysql_url: MysqlUrl, level: str) -> None:
    stream, backfill = _trades(1000, 500), _trades(1500, 500)
    _race(mysql_url, level, stream, backfill)
    assert_rows_match(mysql_url, [*stream, *backfill], all_final=False)
    with connection.transaction(mysql_url) as cur:
        cur.execute("SELECT agg_id_ranges FROM moving_averages")
        assert coverage.parse(cur.fetchone()[0]) == [(1000, 1999)]
        cur.execute("SELECT first_ms, last_ms FROM pipeline_coverage")
        assert cur.fetchall() == ((MINUTE - 60_000, MINUTE - 1),)


@LEVELS
def test_two_writers_adding_the_same_new_coverage_both_land(mysql_url: MysqlUrl, level: str) -> None:
    _race(mysql_url, level, [], [])
    with connection.transaction(mysql_url) as cur:
        cur.execute("SELECT first_ms, last_ms FROM pipeline_coverage")
        assert cur.fetchall() == ((MINUTE - 60_000, MINUTE - 1),)
