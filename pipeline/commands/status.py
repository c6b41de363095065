"""``pipeline status``: is the pipeline healthy? One screen (or ``--json``) from what the services themselves hold.

    services (Kafka, MySQL)      the local stack's processes, or the services the environment names
    topic end offsets            per partition, from Kafka
    job's committed offsets      per partition, from the checkpoint's newest committed batch (or the ledger)
    last committed batch, age    the ledger (pipeline_batches)
    windows, late, quarantined   moving_averages, quarantine
    each symbol's coverage       pipeline_coverage: how far behind now the producer's heartbeats are

Exit 1 when a service is down, or when a message has waited unread longer than ``STALLED_S`` (the job is not
running, or not keeping up).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.adapters.checkpoint import committed_ends
from pipeline.adapters.mysql.ledger import read_ends
from pipeline.commands import args as checks
from pipeline.commands.context import Context
from pipeline.core import times

STALLED_S = 300.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="is the pipeline healthy: services, the job's lag per partition, its last "
                                      "batch, windows, late and quarantined trades, producers' coverage")
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p.add_argument("--stalled-after", type=float, default=STALLED_S, help="seconds an unread message may wait "
                   "before the job counts as stalled (default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    checks.positive(args.stalled_after, "--stalled-after")
    report = gather(ctx, args.stalled_after)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0 if report.get("ok") else 1


def _mysql_figures(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    """The MySQL part of the report, and the ledger's offsets (where the checkpoint cannot be read)."""
    from pipeline.adapters.mysql import reads

    reader = ctx.mysql_read_url()
    f = reads.status_figures(reader)
    last = f.last_batch
    now_ms = checks.now_ms()
    figures = {
        "database": str(reader), "windows_open": f.windows_open, "windows_final": f.windows_final,
        "late_trades": f.late_trades, "quarantined": f.quarantined,
        "last_batch": None if last is None else {
            "batch_id": last.batch_id, "applied_at": last.applied_at.isoformat() + "Z",  # a naive UTC DATETIME
            "age_s": round((now_ms - times.ms(last.applied_at)) / 1000, 1), "trades_merged": last.trades_merged},
        "coverage": [{"symbol": s, "complete_before": times.utc(end).isoformat() + "Z",
                      "behind_now_s": round((now_ms - end) / 1000, 1)} for s, end in f.coverage],
    }
    return figures, f.ledger_offsets


def _probe_each(ctx: Context) -> list[Any]:
    """Each service where the commands would look for it (environment first, then the local stack), probed."""
    from pipeline.services import kafka_process, mysql_process
    from pipeline.services.connections import ServiceStatus

    def kafka() -> str:
        bootstrap = ctx.kafka_bootstrap()
        kafka_process.metadata_ok(bootstrap, ctx.settings.kafka_client_options())
        return bootstrap

    def mysql() -> str:
        url = ctx.mysql_read_url()
        mysql_process.ping(url)
        return str(url)

    out = []
    for name, probe in (("kafka", kafka), ("mysql", mysql)):
        try:
            out.append(ServiceStatus(name, True, probe()))
        except Exception as exc:  # noqa: BLE001 - reported, not raised (not configured, or not answering)
            out.append(ServiceStatus(name, False, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out


def gather(ctx: Context, stalled_after_s: float = STALLED_S) -> dict[str, Any]:
    """Everything the screen shows, as plain data (the ``--json`` output)."""
    settings = ctx.settings
    if (settings.kafka_bootstrap is None) != (settings.mysql_url is None):
        backend, services = "mixed", _probe_each(ctx)  # one from the environment, one from the stack
    else:
        backend, services = ctx.stack().status()
    report: dict[str, Any] = {
        "backend": backend, "topic": settings.topic,
        "services": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in services],
        "problems": [],
    }
    if backend == "none":
        report["problems"].append("no services: no local stack running and PIPELINE_KAFKA_BOOTSTRAP / "
                                  "PIPELINE_MYSQL_URL not set (start one with `pipeline stack up`)")
        return report
    report["problems"] += [f"{s.name} is down: {s.detail}" for s in services if not s.ok]
    up = {s.name for s in services if s.ok}
    ledger: list[str] = []
    if "mysql" in up:
        try:
            figures, ledger = _mysql_figures(ctx)
            report.update(figures)
        except Exception as exc:  # noqa: BLE001 - reported: a missing schema, a missing privilege
            report["problems"].append(f"MySQL answers but its tables cannot be read: {type(exc).__name__}: {exc}")
    _offsets(ctx, report, ledger, "kafka" in up, stalled_after_s)
    report["ok"] = not report["problems"]
    return report


def _offsets(ctx: Context, report: dict[str, Any], ledger: list[str], kafka_up: bool, stalled_after_s: float) -> None:
    """The topic's end offsets against the job's committed ones; a stall when a message waited too long."""
    from pipeline.adapters import kafka_io

    settings, ends = ctx.settings, {}
    options = settings.kafka_client_options()
    if kafka_up:
        try:
            ends = kafka_io.end_offsets(ctx.kafka_bootstrap(), settings.topic, options)
        except Exception as exc:  # noqa: BLE001 - reported
            report["problems"].append(f"Kafka answers but topic {settings.topic} cannot be read: {exc}")
    checkpoint = ctx.checkpoint()
    from_checkpoint = committed_ends(checkpoint) if isinstance(checkpoint, Path) else None
    if from_checkpoint is not None:
        committed, source = from_checkpoint.get(settings.topic, {}), f"checkpoint {checkpoint}"
    else:
        committed, source = read_ends(ledger, settings.topic), "ledger (pipeline_batches)"
    report["committed_from"] = source
    report["partitions"] = [{"partition": p, "end": end, "committed": committed.get(p, 0),
                             "lag": max(end - committed.get(p, 0), 0)} for p, end in sorted(ends.items())]
    lag = sum(p["lag"] for p in report["partitions"])
    report["lag"] = lag
    if not lag:
        return
    try:  # stalled: a message has waited longer than a running job ever lets one wait
        oldest = kafka_io.oldest_unread_ms(ctx.kafka_bootstrap(), settings.topic,
                                           {p["partition"]: p["committed"] for p in report["partitions"]}, ends,
                                           options)
    except Exception:  # noqa: BLE001 - Kafka's own problem is reported above
        oldest = None
    waiting_s = None if oldest is None else max(time.time() - oldest / 1000, 0.0)
    report["oldest_unread_age_s"] = None if waiting_s is None else round(waiting_s, 1)
    if waiting_s is not None and waiting_s > stalled_after_s:
        report["problems"].append(
            f"the job is not keeping up: {lag:,} messages unread, the oldest published {_age(waiting_s)} ago "
            "(is `pipeline process` running?)")


def render(report: Mapping[str, Any]) -> str:
    lines = [f"services ({report['backend']}):"]
    for s in report["services"]:
        lines.append(f"  {s['name']:<6} {'up' if s['ok'] else 'DOWN':<5} {s['detail']}")
    if "partitions" in report:
        lines.append(f"topic {report['topic']}: job's offsets from the {report['committed_from']}")
        lines.append("  partition        end  committed        lag")
        for p in report["partitions"]:
            lines.append(f"  {p['partition']:>9} {p['end']:>10,} {p['committed']:>10,} {p['lag']:>10,}")
        if not report["partitions"]:
            lines.append("  (no such topic yet)")
    if "windows_final" in report:
        last = report["last_batch"]
        lines.append("last committed batch: " + ("none yet" if last is None else
                                                 f"{last['batch_id']} at {last['applied_at']} ({last['age_s']:.0f} s "
                                                 f"ago, {last['trades_merged']:,} trades)"))
        lines.append(f"windows: {report['windows_open']:,} open, {report['windows_final']:,} final; "
                     f"late trades {report['late_trades']:,}; quarantined messages {report['quarantined']:,}")
        if report["coverage"]:
            lines.append("producers' coverage (heartbeats): complete before, behind now")
            for c in report["coverage"]:
                lines.append(f"  {c['symbol']:<12} {c['complete_before']}  {_age(c['behind_now_s'])}")
    lines.append("OK" if report.get("ok") else "PROBLEMS:\n" + "\n".join(f"  - {p}" for p in report["problems"]))
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} days"
