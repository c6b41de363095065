"""Quarantine: refused and late messages kept with their reason and raw text, known by position and content."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipeline.adapters.mysql.state import KEY_CHUNK
from pipeline.core.batch import Identity, QuarantinedMessage
from pipeline.core.times import utc_now

REASON_CHARS = 255  # quarantine.reason
RAW_VALUE_CHARS = 4_000_000  # quarantine.raw_value (MEDIUMTEXT: 16 MiB, up to 4 bytes a character)


def _row(m: QuarantinedMessage, now: datetime) -> tuple[Any, ...]:
    """Cut explicitly to what the columns hold (never left to the server: strict mode would fail the batch,
    ``INSERT IGNORE`` would hide it), saying so in the kept text."""
    raw = m.raw_value
    if raw is not None and len(raw) > RAW_VALUE_CHARS:
        raw = f"{raw[:RAW_VALUE_CHARS]}... [cut: {len(raw)} characters in the message]"
    reason = m.reason if len(m.reason) <= REASON_CHARS else m.reason[:REASON_CHARS - 3] + "..."
    return (m.topic, m.partition, m.offset, m.digest, m.kafka_timestamp, reason, raw, now)


def add_quarantine(cur: Any, messages: Sequence[QuarantinedMessage]) -> set[Identity]:
    """Keep rejected messages with their reason, each once (by position and content); returns the identities of
    those that were not kept before (a re-executed batch finds its messages kept and adds nothing)."""
    wanted = {m.identity: m for m in messages}
    known: set[Identity] = set()
    keys = sorted(wanted)
    for i in range(0, len(keys), KEY_CHUNK):
        chunk = keys[i:i + KEY_CHUNK]
        tuples = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
        cur.execute("SELECT topic, kafka_partition, kafka_offset, digest FROM quarantine WHERE "
                    f"(topic, kafka_partition, kafka_offset, digest) IN ({tuples}) FOR UPDATE",
                    [v for k in chunk for v in k])
        known.update((str(t), int(p), int(o), str(d)) for t, p, o, d in cur.fetchall())
    new = [m for k, m in sorted(wanted.items()) if k not in known]
    if new:
        now = utc_now()
        cur.executemany("INSERT INTO quarantine (topic, kafka_partition, kafka_offset, digest, kafka_timestamp, "
                        "reason, raw_value, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [_row(m, now) for m in new])
    return {m.identity for m in new}

