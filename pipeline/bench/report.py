"""What the bench shows: progress lines on stderr while it runs; at the end the figures' spreads, the targets (marked
pass/FAIL, never asserted), the machine it ran on, one markdown table on stdout and the JSON report."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str, str]  # figure, measured, side by side, target, mark


class Progress:
    """``[  12.3s] what`` lines on stderr while the bench runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr, flush=True)


def every(seconds: float) -> Callable[[], bool]:
    """True once per ``seconds`` (for periodic progress lines inside loops)."""
    last = [time.monotonic()]

    def due() -> bool:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            return True
        return False

    return due


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def spread(values: Sequence[float], *qs: float) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {f"p{q:g}": _round(percentile(values, q)) for q in qs}
    out["max"] = _round(max(values)) if values else None
    out["n"] = len(values)
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def derive(f: dict[str, Any]) -> None:
    """The ratios and figures computed from others."""
    if "processor" in f and "spark_read_count" in f:
        f["processor_vs_spark_read"] = round(f["spark_read_count"]["steady_s"] / f["processor"]["steady_s"], 3)
    if "replay" in f and "raw_produce" in f:
        f["replay_vs_raw_produce"] = round(f["replay"]["trades_per_s"] / f["raw_produce"]["messages_per_s"], 3)
    if "freshness" in f:
        f["first_batch_s"] = f["freshness"]["first_batch_s"]


def machine(spark_master: str | None) -> dict[str, Any]:
    import importlib.metadata

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    commit, dirty = None, None
    try:
        here = Path(__file__).parents[1]  # the pipeline package
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True, capture_output=True,
                                timeout=5).stdout.strip() or None
        if commit:  # uncommitted changes to the package: the figures are of the working tree, not of the commit
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, text=True,
                                        capture_output=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "pyspark": version("pyspark"),
            "kafka_python": version("kafka-python"), "git_commit": commit, "git_dirty": dirty,
            "spark_master": spark_master or "local[2]"}


# ---------------------------------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    measured: float | None
    goal: float
    at_most: bool  # the measured value must stay at or below the goal (else at or above)
    shown: str

    @property
    def passed(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.goal if self.at_most else self.measured >= self.goal


def _get(f: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(f, dict) or key not in f:
            return None
        f = f[key]
    return f


def target_list(f: dict[str, Any]) -> list[Target]:
    empty = _get(f, "ledger", "empty", "batch_ms_after_warmup", "p50")
    month = _get(f, "ledger", "month", "batch_ms_after_warmup", "p50")
    return [
        Target("processor steady trades/s", _get(f, "processor", "steady_trades_per_s"), 100_000, False,
               ">= 100,000/s"),
        Target("processor / Spark read + count", f.get("processor_vs_spark_read"), 0.6, False, ">= 0.60"),
        Target("replay trades/s", _get(f, "replay", "trades_per_s"), 50_000, False, ">= 50,000/s"),
        Target("replay / raw produce", f.get("replay_vs_raw_produce"), 0.5, False, ">= 0.50"),
        Target("freshness p50", _get(f, "freshness", "ack_to_visible_s", "p50"), 0.5, True, "<= 0.5 s"),
        Target("freshness p99", _get(f, "freshness", "ack_to_visible_s", "p99"), 1.0, True, "<= 1 s"),
        Target("final row after the covering heartbeat's ack (max)",
               _get(f, "freshness", "final_after_heartbeat_ack_s", "max"), 1.0, True, "<= 1 s"),
        Target("first batch after start", f.get("first_batch_s"), 15.0, True, "<= 15 s"),
        Target("catch-up of the longest outage", max((o["catch_up_s"] for o in f.get("outage", [])), default=None),
               120.0, True, "<= 120 s"),
        # Flat: a month of ledger rows adds at most 20 % (+ 50 ms of noise) to the median batch.
        Target("batch time, month ledger vs empty", month, (empty or 0) * 1.2 + 50 if empty else math.inf, True,
               "flat (<= 1.2x + 50 ms)"),
    ]


def targets(f: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "measured": t.measured, "target": t.shown, "pass": t.passed} for t in target_list(f)]


def _mark(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def _n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


# ---------------------------------------------------------------------------------------------------- the table


def table(report: dict[str, Any]) -> str:
    """One markdown table: each figure, what it stands next to, the target and its mark."""
    f = report["figures"]
    marks = {t.name: _mark(t.passed) for t in target_list(f)}
    rows = [*_processor_rows(f, marks), *_replay_rows(f, marks), *_outage_rows(f), *_freshness_rows(f, marks),
            *_ledger_rows(f, marks)]
    rss = f.get("peak_rss_mib", {})
    rows.append(("peak RSS", f"Spark driver (python + JVM) {_n(rss.get('spark_driver'), 0, ' MiB')}",
                 f"Kafka {_n(rss.get('kafka'), 0, ' MiB')}, MySQL {_n(rss.get('mysql'), 0, ' MiB')}", "", ""))
    head = ("figure", "measured", "side by side", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    sizes = report["sizes"]
    title = (f"pipeline bench{' --quick' if report['quick'] else ''}: {sizes['trades']:,} trades, live "
             f"{sizes['rate']}/s; {report['started_at']}, {report['machine']['cpus']} cores, "
             f"{report['seconds']:g} s")
    return title + "\n\n" + "\n".join(lines)


def _processor_rows(f: dict[str, Any], marks: dict[str, str]) -> list[Row]:
    """The processor next to Spark's read + count: steady, the ratio of the two, wall."""
    if "processor" not in f:
        return []
    p, c = f["processor"], f.get("spark_read_count", {})
    steady = f"{_n(p['steady_trades_per_s'])} trades/s ({_n(p['steady_s'], 2)} s; batches: {p['batches']})"
    spark = f"Spark read + count: {_n(c.get('steady_trades_per_s'))}/s ({_n(c.get('steady_s'), 2)} s)"
    wall = f"{_n(p['wall_s'], 1)} s ({_n(p['wall_trades_per_s'])} trades/s)"
    return [("processor, steady (first batch start -> last batch end)", steady, spark, ">= 100,000/s",
             marks["processor steady trades/s"]),
            _ratio("processor / Spark read + count (steady)", f.get("processor_vs_spark_read"), ">= 0.60",
                   marks["processor / Spark read + count"]),
            ("processor, wall (incl. JVM + session start)", wall, f"Spark read + count: {_n(c.get('wall_s'), 1)} s",
             "", "")]


def _replay_rows(f: dict[str, Any], marks: dict[str, str]) -> list[Row]:
    """The replay next to kafka-python's raw produce, and the ratio of the two."""
    if "replay" not in f:
        return []
    r, raw = f["replay"], f.get("raw_produce", {})
    publishing = f"{_n(r['trades_per_s'])} trades/s ({_n(r['publishing_s'], 1)} s; wall {_n(r['wall_s'], 1)} s)"
    return [("replay --speed max, publishing", publishing,
             f"kafka-python raw: {_n(raw.get('messages_per_s'))}/s ({_n(raw.get('seconds'), 1)} s)", ">= 50,000/s",
             marks["replay trades/s"]),
            _ratio("replay / raw produce", f.get("replay_vs_raw_produce"), ">= 0.50", marks["replay / raw produce"])]


def _ratio(figure: str, ratio: float | None, target: str, mark: str) -> Row:
    return (figure, _n(ratio, 2), "", target, mark)


def _outage_rows(f: dict[str, Any]) -> list[Row]:
    return [(f"catch-up after {o['symbols']} symbols x {o['minutes'] / 60:g} h down ({o['trades']:,} trades, "
             f"{o['heartbeats']:,} heartbeats)",
             f"{_n(o['catch_up_s'], 1)} s (`process --until-idle`, start to exit; {o['batches']} batches)",
             f"steady {_n(o['steady_s'], 1)} s; {o['windows_final']:,} of {o['windows']:,} windows final; "
             f"exact count: {o['exact_count']}", "<= 120 s", _mark(o["catch_up_s"] <= 120.0))
            for o in f.get("outage", [])]


def _freshness_rows(f: dict[str, Any], marks: dict[str, str]) -> list[Row]:
    if "freshness" not in f:
        return []
    fr = f["freshness"]
    a, e, b = fr["ack_to_visible_s"], fr["final_after_window_end_plus_lag_s"], fr["final_after_heartbeat_ack_s"]
    w, batch = fr["ack_to_visible_after_warmup_s"], fr["batch_ms"]
    rows: list[Row] = [
        (f"freshness: ack -> visible in MySQL ({fr['rate_per_s']}/s, {fr['seconds']:g} s)",
         f"p50 {_n(a['p50'], 2)} s, p95 {_n(a['p95'], 2)} s, p99 {_n(a['p99'], 2)} s ({_n(a['n'])} trades)",
         f"after the first {fr['warmup_s']:g} s: p50 {_n(w['p50'], 2)} s, p99 {_n(w['p99'], 2)} s; batch p50 "
         f"{_n(batch['p50'])} ms, p95 {_n(batch['p95'])} ms", "p50 <= 0.5 s, p99 <= 1 s",
         f"{marks['freshness p50']}, {marks['freshness p99']}"),
        ("final row after the covering heartbeat's ack",
         f"p50 {_n(b['p50'], 2)} s, max {_n(b['max'], 2)} s ({b['n']} windows)",
         f"after window end + lag ({fr['heartbeat_lag_s']:g} s; heartbeats each second): p50 {_n(e['p50'], 2)} s, "
         f"max {_n(e['max'], 2)} s", "<= 1 s", marks["final row after the covering heartbeat's ack (max)"]),
        ("`pipeline process` start -> first committed batch", f"{_n(fr['first_batch_s'], 1)} s", "", "<= 15 s",
         marks["first batch after start"])]
    runs = f.get("freshness_runs", [])
    for i, one in enumerate(runs):
        a, e = one["ack_to_visible_s"], one["final_after_heartbeat_ack_s"]
        rows.append((f"  run {i + 1} of {len(runs)}",
                     f"ack -> visible p50 {_n(a['p50'], 2)} s, p99 {_n(a['p99'], 2)} s; batch p50 "
                     f"{_n(one['batch_ms']['p50'])} ms", f"final after the heartbeat's ack max {_n(e['max'], 2)} s; "
                     f"first batch {_n(one['first_batch_s'], 1)} s", "", ""))
    return rows


def _ledger_rows(f: dict[str, Any], marks: dict[str, str]) -> list[Row]:
    rows: list[Row] = []
    if "spark_floor" in f:
        fl, job = f["spark_floor"], f.get("freshness", {}).get("batch_ms_after_warmup", {})
        rows.append((f"Spark's floor: foreachBatch that only counts ({fl['trigger_s']:g} s trigger, same pace)",
                     f"batch p50 {_n(fl['batch_ms']['p50'])} ms, p99 {_n(fl['batch_ms']['p99'])} ms",
                     f"the job (worst run, after warm-up): batch p50 {_n(job.get('p50'))} ms, p95 "
                     f"{_n(job.get('p95'))} ms", "", ""))
    if "ledger" in f:
        lg = f["ledger"]
        em, mo = lg["empty"]["batch_ms_after_warmup"], lg["month"]["batch_ms_after_warmup"]
        rows.append((f"batch time, {lg['rows']:,} ledger rows (a month)",
                     f"p50 {_n(mo['p50'])} ms, p95 {_n(mo['p95'])} ms ({mo['n']} batches)",
                     f"empty ledger: p50 {_n(em['p50'])} ms, p95 {_n(em['p95'])} ms; ratio "
                     f"{_n(lg['p50_ratio_month_to_empty'], 2)}", "flat", marks["batch time, month ledger vs empty"]))
    return rows


def default_out() -> Path:
    return Path.cwd() / "bench" / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
