"""`pipeline reconcile` against a simulated Binance on 127.0.0.1 serving 1m klines consistent with its trades, and
a real MySQL: a clean table matches; a window that lost a trade and a missing window are found, column by column;
`--repair` rewrites both exact from the exchange's aggTrades and records why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pipeline.adapters.mysql import connection, state
from pipeline.core import windows
from pipeline.core.trades import Trade, id_ranges, invalid_reason
from pipeline.settings import MysqlUrl, Settings
from tests.cli_helpers import env_for, run
from tests.reference_rows import assert_rows_match
from tests.sim_binance import MARKETS, SimBinance

SYMBOL = "SOLUSDT"  # about two aggTrades a second: a few hundred trades per minute, several pages when repaired
MINUTES = 12


@pytest.fixture
def exchange() -> Iterator[tuple[SimBinance, str, int, int]]:
    settled_ms = int(time.time() * 1000) - 15_000  # reconcile judges only minutes older than the watermark (10 s)
    end_ms = settled_ms - settled_ms % 60_000  # whole minutes only
    start_ms = end_ms - MINUTES * 60_000
    sim = SimBinance([MARKETS[SYMBOL]], seed=13, history_start_ms=start_ms - 60_000)
    base_url = sim.start()
    try:
        yield sim, base_url, start_ms, end_ms
    finally:
        sim.stop()


def _write_final(url: MysqlUrl, trades: list[Trade]) -> None:
    """The windows of ``trades``, final, as the job would leave them."""
    by_minute: dict[int, list[Trade]] = {}
    for t in trades:
        by_minute.setdefault(windows.window_start_ms(t.event_time_ms), []).append(t)
    with connection.transaction(url) as cur:
        for start, mine in by_minute.items():
            acc = windows.initialize()
            for t in mine:
                acc = windows.add(acc, t)
            state.write_windows(cur, [(windows.result(SYMBOL, start, acc), acc,
                                             id_ranges(t.agg_id for t in mine))])
        cur.execute("UPDATE moving_averages SET is_final = 1")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def test_reconcile_matches_then_finds_a_lost_trade_and_a_missing_minute_and_repairs_them(
        settings_for: Settings, exchange: tuple[SimBinance, str, int, int]) -> None:
    sim, base_url, start_ms, end_ms = exchange
    url = settings_for.mysql_url
    assert url is not None
    env = env_for(settings_for)
    command = ["reconcile", "--symbol", SYMBOL, "--since", _iso(start_ms), "--until", _iso(end_ms),
               "--base-url", base_url]
    first = run([*command, "--json"], env, timeout=120)  # the exchange's market runs up to now
    trades = [t for t in sim.served_trades(SYMBOL)
              if invalid_reason(t) is None and start_ms <= t.event_time_ms < end_ms]
    assert len({windows.window_start_ms(t.event_time_ms) for t in trades}) == MINUTES
    report = json.loads(first.stdout)
    assert first.returncode == 1 and report["summary"]["missing_in_table"] == MINUTES  # an empty table

    _write_final(url, trades)
    clean = run(command, env, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{MINUTES} match, 0 mismatch, 0 missing in table, 0 missing at exchange" in clean.stdout

    # One window loses its last trade (as if a message had been dropped), another disappears.
    lossy, gone = start_ms + 3 * 60_000, start_ms + 7 * 60_000
    lost = max((t for t in trades if windows.window_start_ms(t.event_time_ms) == lossy), key=lambda t: t.agg_id)
    with connection.transaction(url) as cur:
        cur.execute("DELETE FROM moving_averages")
    _write_final(url, [t for t in trades if t is not lost and windows.window_start_ms(t.event_time_ms) != gone])
    found = run([*command, "--json"], env, timeout=120)
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert report["summary"] == {"match": MINUTES - 2, "mismatch": 1, "missing_in_table": 1,
                                 "missing_at_exchange": 0, "open": 0}
    by_start = {m["start"]: m for m in report["minutes"]}
    lossy_minute = by_start[datetime.fromtimestamp(lossy / 1000, UTC).strftime("%Y-%m-%d %H:%M")]
    columns = {d["column"]: d for d in lossy_minute["differences"]}
    assert columns["trade_count"]["by"] == str(-(lost.last_trade_id - lost.first_trade_id + 1))
    assert columns["close_price"]["exchange"] == str(lost.price)
    assert "volume" in columns and by_start[datetime.fromtimestamp(gone / 1000, UTC)
                                            .strftime("%Y-%m-%d %H:%M")]["status"] == "missing_in_table"

    repaired = run([*command, "--repair"], env, timeout=300)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("repaired ") == 2 and "OK: every final minute matches" in repaired.stdout
    assert_rows_match(url, trades)  # exact again, every column, final
    with connection.transaction(url) as cur:
        cur.execute("SELECT start_time, reason, row_before IS NULL FROM pipeline_repairs ORDER BY start_time")
        repairs = cur.fetchall()
    assert [(r[1].split(":")[0], bool(r[2])) for r in repairs] == [("mismatch", False), ("missing_in_table", True)]
    assert run(command, env, timeout=120).returncode == 0  # and it stays so
