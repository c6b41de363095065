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

import time
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

from pipeline.adapters import checkpoint as checkpoints
from pipeline.adapters.checkpoint import committed_ends
from pipeline.adapters.mysql.ledger import read_ends
from pipeline.settings import Settings

STALLED_S = 300.0


def _mysql_figures(settings: Settings) -> dict[str, Any]:
    from pipeline.adapters.mysql import connection
    from pipeline.core import times
    from pipeline.services import stack

    reader = stack.mysql_read_url(settings)
    figures: dict[str, Any] = {"database": str(reader)}
    with connection.transaction(reader) as cur:
        cur.execute("SELECT is_final, COUNT(*), COALESCE(SUM(late_trade_count), 0) FROM moving_averages "
                    "GROUP BY is_final")
        counts = {bool(final): (int(n), int(late)) for final, n, late in cur.fetchall()}
        figures["windows_open"] = counts.get(False, (0, 0))[0]
        figures["windows_final"] = counts.get(True, (0, 0))[0]
        figures["late_trades"] = sum(late for _, late in counts.values())
        cur.execute("SELECT COUNT(*) FROM quarantine")
        figures["quarantined"] = int(cur.fetchone()[0])
        cur.execute("SELECT batch_id, applied_at, offsets, trades_merged FROM pipeline_batches "
                    "WHERE query_name = %s ORDER BY id DESC LIMIT 200", (checkpoints.QUERY,))
        batches = cur.fetchall()
        figures["ledger_offsets"] = [row[2] for row in batches]
        if batches:
            batch_id, applied_at, _, merged = batches[0]
            figures["last_batch"] = {"batch_id": int(batch_id), "applied_at": applied_at.isoformat() + "Z",
                                     # a naive UTC DATETIME
                                     "age_s": round(time.time() - applied_at.replace(tzinfo=UTC).timestamp(), 1),
                                     "trades_merged": int(merged)}
        else:
            figures["last_batch"] = None
        cur.execute("SELECT symbol, MAX(last_ms) FROM pipeline_coverage GROUP BY symbol ORDER BY symbol")
        now_ms = time.time() * 1000
        figures["coverage"] = [{"symbol": s, "complete_before": times.utc(int(last)).isoformat() + "Z",
                                "behind_now_s": round((now_ms - int(last)) / 1000, 1)} for s, last in cur.fetchall()]
    return figures


def _probe_each(settings: Settings) -> list[Any]:
    """Each service where the commands would look for it (environment first, then the local stack), probed."""
    from pipeline.services import kafka_process, mysql_process, stack
    from pipeline.services.stack import ServiceStatus

    def kafka() -> str:
        bootstrap = stack.kafka_bootstrap(settings)
        kafka_process.metadata_ok(bootstrap, settings.kafka_client_options())
        return bootstrap

    def mysql() -> str:
        url = stack.mysql_read_url(settings)
        mysql_process.ping(url)
        return str(url)

    out = []
    for name, probe in (("kafka", kafka), ("mysql", mysql)):
        try:
            out.append(ServiceStatus(name, True, probe()))
        except Exception as exc:  # noqa: BLE001 - reported, not raised (not configured, or not answering)
            out.append(ServiceStatus(name, False, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out


def gather(settings: Settings, stalled_after_s: float = STALLED_S) -> dict[str, Any]:
    """Everything the screen shows, as plain data (the ``--json`` output)."""
    from pipeline.adapters import kafka_io
    from pipeline.services import stack

    if (settings.kafka_bootstrap is None) != (settings.mysql_url is None):
        backend, services = "mixed", _probe_each(settings)  # one from the environment, one from the stack
    else:
        backend, services = stack.status(settings)
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
            figures = _mysql_figures(settings)
            ledger = figures.pop("ledger_offsets")
            report.update(figures)
        except Exception as exc:  # noqa: BLE001 - reported: a missing schema, a missing privilege
            report["problems"].append(f"MySQL answers but its tables cannot be read: {type(exc).__name__}: {exc}")
    ends: dict[int, int] = {}
    if "kafka" in up:
        try:
            ends = kafka_io.end_offsets(stack.kafka_bootstrap(settings), settings.topic,
                                        settings.kafka_client_options())
        except Exception as exc:  # noqa: BLE001 - reported
            report["problems"].append(f"Kafka answers but topic {settings.topic} cannot be read: {exc}")
    checkpoint = stack.checkpoint_dir(settings)
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
    if lag:  # stalled: a message has waited longer than a running job ever lets one wait
        try:
            oldest = kafka_io.oldest_unread_ms(stack.kafka_bootstrap(settings), settings.topic,
                                               {p["partition"]: p["committed"] for p in report["partitions"]}, ends,
                                               settings.kafka_client_options())
        except Exception:  # noqa: BLE001 - Kafka's own problem is reported above
            oldest = None
        waiting_s = None if oldest is None else max(time.time() - oldest / 1000, 0.0)
        report["oldest_unread_age_s"] = None if waiting_s is None else round(waiting_s, 1)
        if waiting_s is not None and waiting_s > stalled_after_s:
            report["problems"].append(
                f"the job is not keeping up: {lag:,} messages unread, the oldest published {_age(waiting_s)} ago "
                "(is `pipeline process` running?)")
    report["ok"] = not report["problems"]
    return report


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
