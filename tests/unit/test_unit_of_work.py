"""The batch's unit of work (``core.unit_of_work.apply``) on the in-memory window store, with no Spark and no MySQL.

A topic partition is a list of messages (trades and coverage heartbeats, encoded as the producers encode them);
a batch is a range of its offsets, gathered by the core (``core.batch.gather``, the writer's driver path) and
applied. Spark may cut the partition anywhere, and after a crash or a lost checkpoint read offsets again under the
same cut or another one: the tests draw such schedules and hold the result to the reference aggregator."""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.memory import InMemoryWindowStore
from pipeline.core import coverage, merging, times, unit_of_work, windows
from pipeline.core.batch import BatchCounts, BatchRead, Delivered, QuarantinedMessage, Refused, gather
from pipeline.core.messages import Heartbeat, encode_heartbeat, encode_trade
from pipeline.core.trades import Trade
from pipeline.core.windows import WINDOW_MS
from tests.unit.test_merging import trade_stream

TOPIC, PARTITION = "t", 0
PUBLISHED_MS = 1_800_000_000_000  # every message's Kafka timestamp: after every time the messages speak of

Message = Trade | Heartbeat


def value(message: Message) -> bytes:
    return (encode_heartbeat(message) if isinstance(message, Heartbeat) else encode_trade(message))[1]


def apply(store: InMemoryWindowStore, partition: list[Message], lo: int, hi: int,
          batch_id: int = 0, topic: str = TOPIC) -> BatchCounts | None:
    """Offsets ``lo..hi-1`` of ``partition`` as one batch: gathered by the core, applied to ``store``."""
    delivered = [Delivered(topic, PARTITION, o, PUBLISHED_MS, value(partition[o])) for o in range(lo, hi)]
    text = "\n".join(f"{topic} {d.offset} {d.value!r}" for d in delivered)
    read = BatchRead(hi - lo, f"{topic}/{PARTITION}:{lo}-{hi - 1}", hashlib.sha256(text.encode()).hexdigest())

    def quarantined(refused: list[Refused]) -> list[QuarantinedMessage]:
        return [QuarantinedMessage(topic, p, o, times.utc(PUBLISHED_MS), value(partition[o]).decode(), why)
                for p, o, why in refused]

    return unit_of_work.apply(store, gather(read, delivered, quarantined), batch_id)


def covered(store: InMemoryWindowStore) -> set[tuple[str, int]]:
    """The stored windows whose minute the stored coverage holds."""
    ranges = store.load_coverage({s for s, _ in store.windows})
    return {(s, start) for s, start in store.windows if coverage.covers_window(ranges[s], start, start + WINDOW_MS)}


@st.composite
def partitions(draw: st.DrawFn, copies: bool = True) -> tuple[list[Trade], list[Message]]:
    """Trades of two symbols in one partition, with ``copies`` some published again anywhere (a second producer, a
    replay), and heartbeats that keep their promise: one declares complete only times before every trade of its
    symbol whose first copy comes after it."""
    trades = draw(trade_stream())
    queues = {s: [t for t in trades if t.symbol == s] for s in ("BTCUSDT", "ADAUSDT")}
    order = draw(st.permutations([t.symbol for t in trades]))
    stream: list[Message] = [queues[s].pop(0) for s in order]  # each symbol's trades in their own order
    for i in draw(st.lists(st.integers(0, len(trades) - 1), max_size=10 if copies else 0)):
        stream.insert(draw(st.integers(0, len(stream))), trades[i])
    start = min(t.event_time_ms for t in trades)
    for _ in range(draw(st.integers(0, 6))):
        at, symbol = draw(st.integers(0, len(stream))), draw(st.sampled_from(sorted(queues)))
        firsts = {(t.symbol, t.agg_id): n for n, t in reversed(list(enumerate(stream))) if isinstance(t, Trade)}
        later = [t.event_time_ms for t in trades if t.symbol == symbol and firsts[(symbol, t.agg_id)] >= at]
        until = min(later) if later else max(t.event_time_ms for t in trades) + draw(st.integers(1, 3 * WINDOW_MS))
        since = draw(st.integers(start - 3 * WINDOW_MS, until))
        stream.insert(at, Heartbeat(symbol, since, until))
    return trades, stream


@st.composite
def schedules(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """Batches (offset ranges) that read every offset of ``n``, in order, some read again: the same range (a
    re-executed batch) or another one starting before what was read (a lost checkpoint, another cut)."""
    out: list[tuple[int, int]] = []
    read = again = 0
    while read < n:
        if read and again < 4 and draw(st.booleans()):
            again += 1
            lo = draw(st.integers(0, read - 1))
        else:
            lo = read
        hi = draw(st.integers(lo + 1, n))
        out.append((lo, hi))
        read = max(read, hi)
        if again < 4 and draw(st.booleans()):
            again += 1
            out.append((lo, hi))
    return out


def coverage_read(stream: list[Message], upto: int) -> dict[str, list[coverage.Range]]:
    out: dict[str, list[coverage.Range]] = {}
    for m in stream[:upto]:
        if isinstance(m, Heartbeat) and m.complete_before_ms > m.covered_from_ms:
            out.setdefault(m.symbol, []).append((m.covered_from_ms, m.complete_before_ms - 1))
    return {s: coverage.union(r) for s, r in out.items()}


@settings(max_examples=120)
@given(data=st.data())
def test_any_batching_with_redelivery_gives_the_reference_rows_and_finality_follows_coverage(
        data: st.DataObject) -> None:
    trades, stream = data.draw(partitions())
    store, merged, read = InMemoryWindowStore(), 0, 0
    for batch_id, (lo, hi) in enumerate(data.draw(schedules(len(stream)))):
        before = len(store.ledger)
        counts = apply(store, stream, lo, hi, batch_id)
        if len(store.ledger) == before:  # its fingerprint was known: applied before, nothing happened
            assert counts is None
            continue
        assert counts is not None
        merged, read = merged + counts.trades_merged, max(read, hi)
        assert {s: r for s, r in store.load_coverage({"BTCUSDT", "ADAUSDT"}).items() if r} == coverage_read(
            stream, read)
        assert store.final() == covered(store)  # final exactly when the coverage holds the minute
    assert store.rows() == windows.aggregate(trades)
    assert merged == len({(t.symbol, t.agg_id) for t in trades})
    # Nothing is late but copies of counted trades behind a heartbeat (see the expected failure below).
    firsts = {(t.symbol, t.agg_id): n for n, t in reversed(list(enumerate(stream))) if isinstance(t, Trade)}
    assert all(firsts[(m.symbol, m.agg_id)] < q.offset for q in store.quarantine.values()
               if isinstance(m := stream[q.offset], Trade))


@settings(max_examples=100)
@given(data=st.data())
def test_a_trade_behind_a_heartbeat_covering_its_minute_is_late_and_quarantined_whatever_the_batching(
        data: st.DataObject) -> None:
    trades, stream = data.draw(partitions(copies=False))  # (a copy behind a heartbeat: see below)
    symbol = data.draw(st.sampled_from(["BTCUSDT", "ADAUSDT"]))
    # A heartbeat that keeps its promise and holds at least one whole minute, then, after it, a trade of such a
    # minute that nobody published before it (a producer broke its promise).
    at = data.draw(st.integers(0, len(stream)))
    firsts = {(t.symbol, t.agg_id): n for n, t in reversed(list(enumerate(stream))) if isinstance(t, Trade)}
    later = [t.event_time_ms for t in trades if t.symbol == symbol and firsts[(symbol, t.agg_id)] >= at]
    until = min(later) if later else max(t.event_time_ms for t in trades) + WINDOW_MS
    since = min(t.event_time_ms for t in trades) - 3 * WINDOW_MS
    stream.insert(at, Heartbeat(symbol, since, until))
    first_minute = windows.window_start_ms(since + WINDOW_MS - 1)
    time_ms = data.draw(st.integers(first_minute, windows.window_start_ms(until) - 1))
    late = Trade(symbol, max(t.agg_id for t in trades) + data.draw(st.integers(1, 5)), Decimal("123.45"),
                 Decimal("1"), 1, 1, time_ms, False, True)
    offset = data.draw(st.integers(at + 1, len(stream)))
    stream.insert(offset, late)
    store, late_trades = InMemoryWindowStore(), 0
    for batch_id, (lo, hi) in enumerate(data.draw(schedules(len(stream)))):
        counts = apply(store, stream, lo, hi, batch_id)
        late_trades += counts.late_trades if counts else 0
    key = (symbol, windows.window_start_ms(time_ms))
    assert store.rows() == windows.aggregate(trades)  # not merged
    assert late_trades == 1  # counted once, however often its offset was read
    [kept] = store.quarantine.values()
    assert (kept.offset, kept.raw_value) == (offset, value(late).decode()) and kept.reason.startswith("late: ")
    # On its row at most once (whether at all depends on the cut: see the expected failures below).
    assert {k for k, w in store.windows.items() if w.late_trade_count} <= {key}
    assert all(w.late_trade_count <= 1 for w in store.windows.values())


@settings(max_examples=50)
@given(data=st.data())
def test_the_ledger_makes_a_batch_applied_again_a_no_op(data: st.DataObject) -> None:
    _, stream = data.draw(partitions())
    store = InMemoryWindowStore()
    schedule = data.draw(schedules(len(stream)))
    for batch_id, (lo, hi) in enumerate(schedule):
        apply(store, stream, lo, hi, batch_id)
    lo, hi = data.draw(st.sampled_from(schedule))
    before = copy.deepcopy((store.windows, store.coverage, store.quarantine, store.ledger))
    assert apply(store, stream, lo, hi, batch_id=10**6) is None  # any batch id: known by what it read
    assert (store.windows, store.coverage, store.quarantine, store.ledger) == before


MINUTE = 1_700_000_040_000  # a minute's start


def trade(agg_id: int, time_ms: int, price: str = "10") -> Trade:
    return Trade("BTCUSDT", agg_id, Decimal(price), Decimal("1"), agg_id, agg_id, time_ms, False, True)


def test_a_worked_example() -> None:
    minute = MINUTE
    stream: list[Message] = [trade(1, minute + 1_000, "10"), trade(2, minute + 2_000, "12"),
                             Heartbeat("BTCUSDT", minute - WINDOW_MS, minute + 30_000),  # half the minute
                             trade(3, minute + 40_000, "11"),
                             Heartbeat("BTCUSDT", minute - WINDOW_MS, minute + WINDOW_MS),  # all of it
                             trade(4, minute + 50_000, "99")]  # a broken promise
    store = InMemoryWindowStore()
    assert apply(store, stream, 0, 4) == BatchCounts(trades_merged=3, rows_written=1)
    assert not store.final()
    assert apply(store, stream, 0, 4, batch_id=1) is None
    assert apply(store, stream, 2, 6, batch_id=1) == BatchCounts(
        duplicates=1, late_trades=1, quarantined=1, rows_finalized=1)
    [row] = store.rows().values()
    assert (row.agg_trade_count, row.close_price, row.high_price) == (3, Decimal("11"), Decimal("12"))
    assert store.final() == {("BTCUSDT", minute)} and store.windows[("BTCUSDT", minute)].late_trade_count == 1
    # Read again under another cut: the late trade is known by its position and content, so nothing counts twice.
    assert apply(store, stream, 5, 6, batch_id=2) == BatchCounts(duplicates=1)


# Found by the properties above. The first two: the transaction loaded only the windows of the islands not behind a
# heartbeat, so for a trade behind one whose window had no other trade in the batch, ``late_kept`` and ``add_late``
# did not see the stored row. The third: a heartbeat ending inside a minute made a trade late in its own batch only
# (now a trade is behind a heartbeat only if it closed its whole minute: ``coverage.whole_windows``).


def test_a_copy_of_a_counted_trade_behind_a_heartbeat_is_a_duplicate_not_late() -> None:
    stream: list[Message] = [trade(1, MINUTE + 1_000), Heartbeat("BTCUSDT", MINUTE - WINDOW_MS, MINUTE + WINDOW_MS),
                             trade(1, MINUTE + 1_000)]  # published again, by a second producer or a replay
    store = InMemoryWindowStore()
    apply(store, stream, 0, 1)
    assert apply(store, stream, 1, 3, batch_id=1) == BatchCounts(duplicates=1, rows_finalized=1)


def test_a_late_trade_is_counted_on_its_row_whatever_the_cut() -> None:
    stream: list[Message] = [trade(1, MINUTE + 1_000), Heartbeat("BTCUSDT", MINUTE - WINDOW_MS, MINUTE + WINDOW_MS),
                             trade(2, MINUTE + 2_000)]  # a broken promise
    one, other = InMemoryWindowStore(), InMemoryWindowStore()
    apply(one, stream, 0, 1)
    apply(one, stream, 1, 3, batch_id=1)  # the late trade in the heartbeat's batch
    apply(other, stream, 0, 2)
    apply(other, stream, 2, 3, batch_id=1)  # in a batch of its own
    assert other.windows[("BTCUSDT", MINUTE)].late_trade_count == 1
    assert one.windows[("BTCUSDT", MINUTE)].late_trade_count == 1


def test_a_trade_behind_a_heartbeat_ending_inside_its_minute_is_treated_alike_whatever_the_cut() -> None:
    stream: list[Message] = [trade(1, MINUTE + 1_000), Heartbeat("BTCUSDT", MINUTE - WINDOW_MS, MINUTE + 30_000),
                             trade(2, MINUTE + 10_000, "99")]  # behind the heartbeat, which covers its time
    together, apart = InMemoryWindowStore(), InMemoryWindowStore()
    apply(together, stream, 0, 3)  # late, kept in quarantine
    apply(apart, stream, 0, 2)
    apply(apart, stream, 2, 3, batch_id=1)  # merged: the stored coverage does not hold the whole minute
    assert together.rows() == apart.rows() and len(together.quarantine) == len(apart.quarantine)


def test_the_fake_keeps_a_final_rows_numbers_as_the_mysql_upsert_does() -> None:
    """The unit of work never writes a closed window; the store refuses to anyway (``state.UPSERT``)."""
    store = InMemoryWindowStore()
    first, second = merging.islands_of([trade(1, MINUTE)]), merging.islands_of([trade(2, MINUTE, "99")])
    store.write_windows([(windows.result("BTCUSDT", MINUTE, first[0].acc), first[0].acc, [(1, 1)])])
    assert store.finalize_new("BTCUSDT", [(MINUTE, MINUTE, MINUTE + WINDOW_MS)]) == 1
    assert store.write_windows([(windows.result("BTCUSDT", MINUTE, second[0].acc), second[0].acc, [(2, 2)])]) == 1
    assert store.load_windows([("BTCUSDT", MINUTE)])[("BTCUSDT", MINUTE)].id_ranges == ((1, 1),)
    assert store.rows()[("BTCUSDT", MINUTE)].close_price == Decimal("10")
    store.add_late([("BTCUSDT", MINUTE, 2), ("BTCUSDT", MINUTE + WINDOW_MS, 5)])  # a row that does not exist: none
    assert [w.late_trade_count for w in store.windows.values()] == [2]


def test_a_backfill_repeated_from_another_topic_counts_its_late_trades_once() -> None:
    """A late trade is known by (symbol, agg id), not by where it was read: each backfill has a topic of its own."""
    stream: list[Message] = [trade(1, MINUTE + 1_000), Heartbeat("BTCUSDT", MINUTE - WINDOW_MS, MINUTE + WINDOW_MS)]
    backfill: list[Message] = [trade(1, MINUTE + 1_000), trade(2, MINUTE + 2_000, "99")]  # 2: the stream missed it
    store = InMemoryWindowStore()
    apply(store, stream, 0, 2)
    assert apply(store, backfill, 0, 2, batch_id=1, topic="backfill-1") == BatchCounts(
        duplicates=1, late_trades=1, quarantined=1)
    assert apply(store, backfill, 0, 2, batch_id=2, topic="backfill-2") == BatchCounts(duplicates=2)
    assert store.windows[("BTCUSDT", MINUTE)].late_trade_count == 1 and len(store.quarantine) == 1
