"""The streaming query's checkpoint, read as Spark writes it (a local directory): the query's subdirectory, the
offsets of the newest committed batch, and each batch's log (when it started, what it read up to, when it was
committed). ``status`` and the bench read it here.

A query's directory holds ``offsets/N`` (written when batch N starts: a version line, a JSON line with
``batchTimestampMs``, then one line per source with its end offsets), ``commits/N`` (written when it ends),
``sources/S/0`` (source S's starting offsets) and ``metadata`` (the query's id)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

QUERY = "stream"  # the query's name, its checkpoint subdirectory and its ledger rows (not "windows": schema 1's)

Offsets = dict[str, dict[int, int]]  # per topic and partition


def committed_ends(checkpoint: Path) -> dict[str, dict[int, int]] | None:
    """The end offsets (exclusive) of the newest batch the checkpoint marks committed, per topic and partition;
    None without a readable local checkpoint."""
    commits = checkpoint / QUERY / "commits"
    try:
        committed = sorted((int(p.name) for p in commits.iterdir() if p.name.isdigit()), reverse=True)
    except OSError:
        return None
    for batch in committed:
        try:
            lines = _lines(checkpoint / QUERY / "offsets" / str(batch))
            return _offsets(json.loads(lines[2]))
        except (OSError, IndexError, ValueError, AttributeError, TypeError):
            continue
    return None


def _lines(path: Path) -> list[str]:
    """A log file's lines (a file being written may start with NUL bytes)."""
    return path.read_text(errors="replace").lstrip("\0").splitlines()


def _offsets(parsed: Any) -> Offsets:
    return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in parsed.items()}


@dataclasses.dataclass(frozen=True)
class LoggedBatch:
    """One batch as its query's offsets log records it, from the moment it starts."""

    batch_id: int
    started_ms: int  # batchTimestampMs: when the trigger fired
    ends: tuple[Offsets, ...]  # per source, the offsets it reads up to (exclusive)


def query_dirs(checkpoint: Path) -> list[Path]:
    """The directory of every streaming query under ``checkpoint`` (the job's ``QUERY``, or any other's)."""
    return sorted(p.parent for p in checkpoint.glob("*/offsets")) if checkpoint.exists() else []


def batch_ids(query: Path) -> list[int]:
    """The batches a query's offsets log still holds (Spark deletes all but the newest
    ``spark.sql.streaming.minBatchesToRetain``), in order."""
    return sorted(int(p.name) for p in (query / "offsets").glob("*") if p.name.isdigit())


def logged_batch(query: Path, batch_id: int) -> LoggedBatch:
    """Batch ``batch_id`` of a query's offsets log. Raises OSError, ValueError, KeyError or IndexError for a file
    being replaced or deleted."""
    lines = _lines(query / "offsets" / str(batch_id))
    started = int(json.loads(lines[1])["batchTimestampMs"])
    ends = tuple(_offsets(json.loads(line)) if line.strip().startswith("{") else {} for line in lines[2:])
    return LoggedBatch(batch_id, started, ends)


def starting_offsets(query: Path) -> list[Offsets]:
    """Per source of a query, the offsets its first batch started from (empty if not recorded)."""
    out: list[Offsets] = []
    for source in sorted((query / "sources").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        first = source / "0"
        out.append(_offsets(json.loads(_lines(first)[1])) if first.exists() else {})
    return out


def committed_at(query: Path, batch_id: int) -> float | None:
    """When batch ``batch_id`` was committed (its ``commits/N`` written; epoch seconds), None if it is not."""
    try:
        return (query / "commits" / str(batch_id)).stat().st_mtime
    except FileNotFoundError:
        return None


def set_query_id(checkpoint: Path, query_id: str) -> None:
    """A new checkpoint whose query will run with id ``query_id`` (Spark reads it from ``metadata`` on start): the
    job's ledger rows are then known beforehand by their run id."""
    (checkpoint / QUERY).mkdir(parents=True)
    (checkpoint / QUERY / "metadata").write_text(json.dumps({"id": query_id}) + "\n")
