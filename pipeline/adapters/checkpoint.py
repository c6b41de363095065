"""The streaming query's checkpoint, read as Spark writes it (a local directory): the query's subdirectory, and the
offsets of the newest committed batch. ``status`` and the bench read it here."""

from __future__ import annotations

import json
from pathlib import Path

QUERY = "stream"  # the query's name, its checkpoint subdirectory and its ledger rows (not "windows": schema 1's)


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
            lines = (checkpoint / QUERY / "offsets" / str(batch)).read_text().splitlines()
            ends = json.loads(lines[2])
        except (OSError, IndexError, ValueError, AttributeError, TypeError):
            continue
        return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in ends.items()}
    return None
