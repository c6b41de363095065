"""``pipeline prune``: delete what the retention settings no longer keep, beside the running job (no stop needed).

    PIPELINE_RETAIN_LEDGER_DAYS      pipeline_batches  kept whatever their age: the newest 1,000 batches, and those
                                                       the checkpoint may execute again
    PIPELINE_RETAIN_QUARANTINE_DAYS  quarantine        kept whatever their age: messages the checkpoint will read again
    PIPELINE_RETAIN_REPAIRS_DAYS     pipeline_repairs

The checkpoint (``PIPELINE_CHECKPOINT_DIR``, as the job's) says what may be read again; one that cannot be read here
(a remote file system, none yet) leaves age, and the newest batches, as the only rules. Run it from cron
(docs/OPERATIONS_RUNBOOK.md, "Retention"); what each kept row is for: ``adapters.mysql.retention``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.adapters.checkpoint import QUERY, batch_ids, committed_at, committed_ends
from pipeline.commands.context import Context
from pipeline.core import times

if TYPE_CHECKING:
    from pipeline.adapters.mysql.retention import Pruned, Replay

VARIABLES = {"pipeline_batches": "PIPELINE_RETAIN_LEDGER_DAYS", "quarantine": "PIPELINE_RETAIN_QUARANTINE_DAYS",
             "pipeline_repairs": "PIPELINE_RETAIN_REPAIRS_DAYS"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="delete ledger, quarantine and repair rows older than PIPELINE_RETAIN_*_DAYS "
                                     "(5,000 rows a transaction), beside the running job")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.adapters.mysql import retention

    settings, now = ctx.settings, times.utc_now()
    checkpoint = ctx.checkpoint()
    replay = replay_of(checkpoint, settings.topic)
    print(f"prune: {checkpoint_line(checkpoint, replay)}")
    days = {"pipeline_batches": settings.retain_ledger_days, "quarantine": settings.retain_quarantine_days,
            "pipeline_repairs": settings.retain_repairs_days}
    url = ctx.mysql_url()
    pruned = retention.prune(url, {name: retention.cutoff(now, n) for name, n in days.items()}, replay, args.dry_run)
    for p in pruned:
        print(f"prune: {line(p, days[p.table.name], args.dry_run)}")
    ranges, symbols, late = retention.state_sizes(url)
    print(f"prune: never pruned (window state): pipeline_coverage {ranges:,} ranges for {symbols:,} symbols (merged "
          f"as written), pipeline_late_trades {late:,} rows")
    return 0


def replay_of(checkpoint: Path | str, topic: str) -> Replay | None:
    """What the job's checkpoint may still read again, from its files; None where they cannot be read here."""
    from pipeline.adapters.mysql.retention import Replay

    if not isinstance(checkpoint, Path):
        return None
    query = checkpoint / QUERY
    try:
        run_id = str(json.loads((query / "metadata").read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    committed = [b for b in batch_ids(query) if committed_at(query, b) is not None]
    return Replay(run_id, max(committed, default=-1), topic, (committed_ends(checkpoint) or {}).get(topic, {}))


def checkpoint_line(checkpoint: Path | str, replay: Replay | None) -> str:
    if replay is None:
        return (f"no checkpoint readable at {checkpoint} (remote, or not written yet): rows are kept by age, and "
                "the ledger's newest batches")
    batch = f"newest committed batch {replay.committed_batch:,}" if replay.committed_batch >= 0 else "nothing committed"
    return (f"checkpoint {checkpoint} (run {replay.run_id}, {batch}): the ledger rows of its later batches and the "
            f"quarantine rows of {replay.topic} messages it will read again are kept")


def line(p: Pruned, days: int, dry_run: bool) -> str:
    if p.before is None:
        return f"{p.table.name}: kept forever ({VARIABLES[p.table.name]}=0)"
    verb = "would delete" if dry_run else "deleted"
    return (f"{p.table.name}: {verb} {p.deleted:,} rows with {p.table.written} before "
            f"{p.before:%Y-%m-%d %H:%M:%S} UTC ({VARIABLES[p.table.name]}={days})")
