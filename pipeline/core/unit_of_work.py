"""A batch's unit of work: the one transaction correctness rests on, written against the ``WindowStore`` port.

    claim     the ledger slot, by the batch's fingerprint (taken: the batch was applied before; nothing happens)
    load      the windows its islands touch and its symbols' coverage, locked
    settle    ``merging.settle``: merged, duplicate, late, or the exact path, per window
    late      the late trades themselves (rare): known by (symbol, agg id), kept in quarantine and counted on
              their rows once
    write     the merged windows, the late counts, the coverage its heartbeats added, the windows that turned final
    record    the batch's figures on its ledger row

The caller runs it in one transaction (``writer.BatchWriter``: MySQL, retried whole) or on a fake
(``adapters.memory.InMemoryWindowStore``: the unit tests).
"""

from __future__ import annotations

from collections import Counter

from pipeline.core import coverage, merging, times, windows
from pipeline.core.batch import BatchCounts, Candidate, Gathered, QuarantinedMessage
from pipeline.core.merging import Key
from pipeline.core.ports import WindowStore
from pipeline.core.windows import WINDOW_MS


def late_kept(candidates: list[Candidate], stored: dict[Key, merging.Stored], outcomes: dict[Key, merging.Outcome],
              ) -> tuple[list[tuple[Key, int, QuarantinedMessage]], int]:
    """The late trades themselves, to be kept where an operator (or a backfill) can find them: those of windows
    that were closed before the batch, and those behind a heartbeat that covers them in this batch. A redelivery
    of a counted trade is a duplicate, not late (those behind a heartbeat are counted here, the others by
    ``merging``)."""
    kept: list[tuple[Key, int, QuarantinedMessage]] = []
    duplicates, seen = 0, set[tuple[str, int]]()
    for c in sorted(candidates, key=lambda c: (c.partition, c.offset)):
        counted = (outcomes[c.key].id_ranges if c.key in outcomes else
                   stored[c.key].id_ranges if c.key in stored else ())
        if coverage.contains(counted, c.agg_id) or (c.key[0], c.agg_id) in seen:
            duplicates += 1 if c.after else 0  # the others were counted by merging
            continue
        seen.add((c.key[0], c.agg_id))
        kept.append((c.key, c.agg_id, QuarantinedMessage(
            c.topic, c.partition, c.offset, times.utc_or_none(c.kafka_timestamp_ms), c.raw_value,
            f"late: window {c.key[0]} {times.utc(c.key[1]):%Y-%m-%d %H:%M} was already declared complete")))
    return kept, duplicates


def apply(store: WindowStore, g: Gathered, batch_id: int) -> BatchCounts | None:
    """Apply the batch ``g`` to ``store``; its figures, or None if the ledger knew its fingerprint (nothing done)."""
    new_coverage: dict[str, list[coverage.Range]] = {}
    for symbol, _, _, start, end in g.beats:
        if end > start:
            new_coverage.setdefault(symbol, []).append((start, end - 1))
    if not store.claim_batch(batch_id, g.read):
        return None
    # The windows of trades behind a heartbeat too: a copy of a counted trade there is a duplicate, and a late
    # trade is counted on its row, whichever batch the heartbeat came in.
    stored = store.load_windows({(i.symbol, i.start_ms) for i in (*g.islands, *g.behind)})
    symbols = {i.symbol for i in g.islands} | {b[0] for b in g.beats}
    before = store.load_coverage(symbols)
    outcomes = merging.settle(stored, before, g.islands, g.exact_trades)
    duplicates = sum(o.duplicates for o in outcomes.values())
    kept: list[tuple[Key, QuarantinedMessage]] = []
    closed = {k for k, o in outcomes.items() if o.late}
    if closed or g.behind:  # rare: fetch the late trades themselves
        found, more_duplicates = late_kept(g.candidates(closed), stored, outcomes)
        # A late trade counts once, known by its agg id: a backfill repeated from another topic brings it again.
        fresh = store.add_late_ids([(k[0], agg_id, k[1]) for k, agg_id, _ in found]) if found else set()
        kept = [(k, msg) for k, agg_id, msg in found if (k[0], agg_id) in fresh]
        duplicates += more_duplicates + len(found) - len(kept)
    new = store.add_quarantine([*g.quarantine, *(msg for _, msg in kept)])
    # A late trade counts once: a batch applied again under another cut finds it kept already.
    late = Counter(key for key, msg in kept if msg.identity in new)
    duplicates += sum(1 for _, msg in kept if msg.identity not in new)
    written = store.write_windows([
        (windows.result(k[0], k[1], o.acc), o.acc, o.id_ranges) for k, o in outcomes.items() if o.merged])
    store.add_late([(k[0], k[1], n) for k, n in late.items()
                    if k in stored or (k in outcomes and outcomes[k].merged)])
    finalized = 0
    for symbol in sorted(symbols):
        old = before.get(symbol, [])
        ranges = coverage.union([*old, *new_coverage.get(symbol, [])])
        if ranges != old:  # only what this batch's heartbeats added: bounded by the batch, not the history
            store.save_coverage(symbol, ranges, old)
            finalized += store.finalize_new(symbol, coverage.newly_final(ranges, old, WINDOW_MS))
    counts = BatchCounts(
        trades_merged=sum(o.merged for o in outcomes.values()), duplicates=duplicates,
        late_trades=sum(late.values()), quarantined=len(new), rows_written=written, rows_finalized=finalized)
    store.record_batch(g.read, counts)
    return counts
