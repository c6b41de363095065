"""What every fault scenario shares: running the ``pipeline`` commands as processes, waiting on them while watching
that they stay alive, and the closing verdict: every window in MySQL equal to the reference aggregator's over the
trades fed, all final, and the ledger (``pipeline_batches``) saying each trade was merged exactly once, none late,
nothing quarantined. The verdict's figures are recorded (one line per scenario) before they are asserted, so a red
run still says how far off it was.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.adapters.mysql import connection, reads
from pipeline.core.trades import Trade
from pipeline.settings import MysqlUrl
from tests.kafka_helpers import trades_in
from tests.reference_rows import actual_rows, expected_rows


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``pipeline <args>`` as a user starts it, output appended to ``log``."""
    with log.open("ab") as out:
        out.write(f"\n=== pipeline {' '.join(args)} ({time.strftime('%H:%M:%S')})\n".encode())
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class Processes:
    """The processes a scenario started, each with its log; whatever is left running at the end is killed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = self.running[name] = spawn(args, env, self.log(name))
        return proc

    def check_alive(self, *names: str) -> None:
        for name in names:
            code = self.running[name].poll()
            assert code is None, f"pipeline {name} exited {code} during the scenario:\n{tail(self.log(name))}"

    def stop(self, name: str, timeout_s: float = 120.0) -> int:
        """SIGTERM, as an operator stops it; its exit code."""
        proc = self.running[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise AssertionError(f"pipeline {name} ignored SIGTERM for {timeout_s:.0f}s:\n{tail(self.log(name))}") \
                from exc

    def wait(self, name: str, timeout_s: float, watching: Iterable[str] = ()) -> int:
        deadline = time.monotonic() + timeout_s
        while self.running[name].poll() is None:
            assert time.monotonic() < deadline, f"pipeline {name} still runs after {timeout_s:.0f}s:\n" \
                                                f"{tail(self.log(name))}"
            self.check_alive(*watching)
            time.sleep(0.2)
        return int(self.running[name].returncode)

    def kill_all(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, check: Callable[[], None] = lambda: None,
               every_s: float = 0.5) -> float:
    """Poll ``condition`` (calling ``check`` between polls, e.g. that the processor still runs); seconds waited."""
    started = time.monotonic()
    while not condition():
        check()
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(every_s)
    return time.monotonic() - started


def ledger(url: MysqlUrl) -> dict[str, int]:
    """The ledger's sums over every batch applied (0s before the job created its tables)."""
    try:
        with connection.transaction(url) as cur:
            cur.execute("SELECT COUNT(*), COALESCE(SUM(trades_merged > 0), 0), COALESCE(SUM(trades_merged), 0), "
                        "COALESCE(SUM(duplicates), 0), COALESCE(SUM(late_trades), 0), COALESCE(SUM(quarantined), 0) "
                        "FROM pipeline_batches")
            row = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM quarantine")
            kept = cur.fetchone()[0]
    except Exception:  # noqa: BLE001 - the schema may not exist yet, or MySQL is down on purpose
        return {"batches": 0, "batches_with_trades": 0, "merged": 0, "duplicates": 0, "late": 0, "quarantined": 0,
                "quarantine_rows": 0}
    keys = ("batches", "batches_with_trades", "merged", "duplicates", "late", "quarantined")
    return {**dict(zip(keys, (int(v) for v in row), strict=True)), "quarantine_rows": int(kept)}


def all_final(url: MysqlUrl, trades: list[Trade]) -> Callable[[], bool]:
    """A condition: every window of ``trades`` is in MySQL and final."""
    wanted = set(expected_rows(trades))

    def check() -> bool:
        try:
            got = {(r.symbol, r.start_time): r.is_final for r in reads.read_windows(url)}
        except Exception:  # noqa: BLE001 - MySQL may be down on purpose
            return False
        return wanted <= set(got) and all(got[k] for k in wanted)

    return check


@dataclasses.dataclass
class Verdict:
    scenario: str
    faults: int
    windows: int
    windows_exact: int
    trades: int  # distinct valid aggTrades fed
    merged: int  # the ledger's sum
    lost: int
    double_counted: int
    late: int
    quarantined: int
    kafka_duplicates: int | None
    seconds: float
    detail: str
    mismatches: list[str]

    def line(self) -> str:
        dup = "" if self.kafka_duplicates is None else f", {self.kafka_duplicates} duplicate messages in Kafka"
        return (f"{self.scenario}: {self.faults} faults injected, {self.windows_exact}/{self.windows} windows exact "
                f"and final, {self.trades} trades fed, {self.merged} merged, {self.lost} lost, {self.double_counted} "
                f"double counted, {self.late} late, {self.quarantined} quarantined{dup}, {self.seconds:.0f} s"
                + (f" ({self.detail})" if self.detail else ""))


def verdict(scenario: str, url: MysqlUrl, trades: list[Trade], *, faults: int, started: float, detail: str,
            summary: list[dict[str, Any]], bootstrap: str | None = None, topic: str | None = None,
            quarantined: int = 0) -> Verdict:
    """Compare, record the figures (a summary line), then assert: exact, final, once, none late."""
    expected, actual = expected_rows(trades), actual_rows(url)
    mismatches, exact = [], 0
    for key, want in expected.items():
        got = actual.get(key)
        if got is None:
            mismatches.append(f"{key}: missing")
            continue
        wrong = [f"{c}: MySQL {getattr(got, c)!r} != reference {v!r}" for c, v in want.items()
                 if getattr(got, c) != v]
        if not got.is_final:
            wrong.append("not final")
        mismatches.extend(f"{key} {w}" for w in wrong)
        exact += not wrong
    mismatches.extend(f"{key}: not in the reference" for key in sorted(set(actual) - set(expected)))
    # Lost / double counted, per window (a window short of trades lost them, one over counted some twice) and in
    # the ledger's sums; the worse of the two is reported.
    lost = sum(max(0, w["agg_trade_count"] - (actual[k].agg_trade_count if k in actual else 0))
               for k, w in expected.items())
    double = sum(max(0, r.agg_trade_count - (expected[k]["agg_trade_count"] if k in expected else 0))
                 for k, r in actual.items())
    distinct = sum(w["agg_trade_count"] for w in expected.values())
    sums = ledger(url)
    kafka_duplicates = None
    if bootstrap and topic:
        in_kafka = [(t.symbol, t.agg_id) for t in trades_in(bootstrap, topic)]
        kafka_duplicates = len(in_kafka) - len(set(in_kafka))
    result = Verdict(scenario, faults, len(expected), exact, distinct, sums["merged"],
                     max(lost, distinct - sums["merged"]), max(double, sums["merged"] - distinct), sums["late"],
                     sums["quarantine_rows"], kafka_duplicates, time.monotonic() - started, detail, mismatches)
    summary.append({"line": result.line(), **{k: v for k, v in dataclasses.asdict(result).items()
                                              if k != "mismatches"}})
    print(result.line())
    assert not mismatches, f"{len(mismatches)} differences from the reference:\n" + "\n".join(mismatches[:20])
    assert (result.merged, result.late, result.quarantined) == (distinct, 0, quarantined), (
        f"ledger: {sums}; {distinct} distinct trades fed, {quarantined} bad messages injected")
    if kafka_duplicates is not None:
        assert kafka_duplicates == 0, f"{kafka_duplicates} trades are in Kafka more than once"
    return result
