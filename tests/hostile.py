"""Issue 10's hostile messages, shared by the unit test of the core's rules and the streaming test that writes them
into a running job."""

from __future__ import annotations

import json

from pipeline.core import messages
from pipeline.core.trades import Trade


def hostile_copies(trade: Trade) -> list[bytes]:
    """Issue 10's eleven broken copies of one real message, each with an agg id of its own so that one wrongly
    accepted would change a row (not hide behind the dedup of the real trade's id)."""
    real = json.loads(messages.encode_trade(trade)[1])

    def copy(**changes: object) -> bytes:
        return json.dumps({**real, "a": real["a"] + 10_000_000, **changes}).encode()

    return [
        copy(T=real["T"] * 1000),  # microseconds
        copy(T=253_402_300_800_000),  # year 10000
        copy(T=4_102_444_800_000),  # 2100-01-01
        copy(s="B" * 25),
        copy(s=real["s"].lower()),
        copy(s=real["s"] + " "),
        copy(p="1234567890123456789012345"),
        copy(a=2**63 - 1, f=2**63 - 1, l=2**63 - 1),
        copy(q="1e30"),
        b"{}",
        b"\xff\xfe\x80 not UTF-8",
    ]
