"""Kafka adapter: the trade sink (idempotent producer, confirmed delivery) and the resume point reader.

The sink never reports a trade as published before the broker acknowledged it: ``flush()`` waits for every
outstanding send and raises if any failed, so the caller advances only past confirmed data.

Every client here (producer, resume reader, admin) takes the security settings (``PIPELINE_KAFKA_SECURITY_PROTOCOL``,
SASL, TLS: ``Settings.kafka_client_options()``) as ``options``, handed down from the composition root; none means
PLAINTEXT. Nothing here reads the environment.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from kafka.partitioner.default import murmur2

from pipeline.core import coverage, messages
from pipeline.core.trades import Trade
from pipeline.errors import ServiceError

log = logging.getLogger(__name__)
DEFAULT_PARTITIONS = 3
MAX_REPLICATION = 3

Options = Mapping[str, Any] | None


def client_options(options: Options = None) -> dict[str, Any]:
    """The security keyword arguments for a kafka-python client (none: PLAINTEXT)."""
    return dict(options or {})


def replication_factor(brokers: int) -> int:
    """A new topic's replicas: three where the cluster has them (one broker may fail), else every broker."""
    return max(1, min(MAX_REPLICATION, brokers))


def _unreachable(bootstrap: str, exc: Exception) -> ServiceError:
    return ServiceError(f"Kafka at {bootstrap} is unreachable or refused the request: {type(exc).__name__}: {exc}")


@contextmanager
def _admin(bootstrap: str, options: Options, *ignored: type[KafkaError]) -> Iterator[KafkaAdminClient]:
    """An admin client, closed after use; Kafka's errors (but ``ignored``) as one ``ServiceError``."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000, bootstrap_timeout_ms=10_000,
                                 **client_options(options))
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    try:
        yield admin
    except ignored:
        pass
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    finally:
        admin.close()


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, options: Options = None) -> None:
    """Create ``topic`` unless it exists, replicated ``replication_factor(brokers)`` times."""
    with _admin(bootstrap, options, TopicAlreadyExistsError) as admin:
        if topic not in set(admin.list_topics()):
            brokers = len(admin.describe_cluster()["brokers"])
            admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                          replication_factor=replication_factor(brokers))])


def delete_topics(bootstrap: str, topics: Iterable[str], options: Options = None, wait_s: float = 30.0) -> None:
    """Delete those of ``topics`` that exist and wait (up to ``wait_s``) until the cluster no longer lists them."""
    with _admin(bootstrap, options, UnknownTopicOrPartitionError) as admin:
        doomed = set(topics) & set(admin.list_topics())
        if doomed:
            admin.delete_topics(sorted(doomed), timeout_ms=int(wait_s * 1000))
        deadline = time.monotonic() + wait_s
        while doomed & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)


def end_offsets(bootstrap: str, topic: str, options: Options = None) -> dict[int, int]:
    """Per partition of ``topic``, the offset the next message will get (empty if there is no such topic)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=15_000,
                                 **client_options(options))
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()} if tps else {}
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    finally:
        consumer.close()


def oldest_unread_ms(bootstrap: str, topic: str, positions: Mapping[int, int], ends: Mapping[int, int],
                     options: Options = None) -> int | None:
    """The Kafka timestamp of the oldest message at a reader's ``positions`` (per partition, below ``ends``), or
    None if it has read everything."""
    behind = {p: pos for p, pos in positions.items() if pos < ends.get(p, 0)}
    if not behind:
        return None
    # earliest: a position retention has deleted reads from the oldest message kept (then older than any left)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=15_000,
                             auto_offset_reset="earliest", **client_options(options))
    try:
        oldest: int | None = None
        for partition, position in behind.items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, position)
            for records in consumer.poll(timeout_ms=5_000, max_records=1).values():
                for record in records:
                    oldest = record.timestamp if oldest is None else min(oldest, record.timestamp)
        return oldest
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    finally:
        consumer.close()


class TradeSink:
    """Publishes trades keyed by symbol (so each symbol stays in order on one partition) and heartbeats."""

    def __init__(self, bootstrap: str, topic: str, options: Options = None, **overrides: Any) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        config: dict[str, Any] = {
            **client_options(options),
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": True,  # broker-side dedup of retried batches: no duplicates from retries
            # lz4 (native, a dependency): as small on the wire for these JSON messages as the Java clients' default
            # choice, several times cheaper than gzip on the producer's one sender thread (ADR-13)
            "compression_type": "lz4",
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "delivery_timeout_ms": 120_000,
            "bootstrap_timeout_ms": 10_000,
        }
        config.update(overrides)
        try:
            self._producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from exc
        self._pending: list[Any] = []
        self._partitions: int | None = None

    def _send(self, key: bytes, value: bytes) -> None:
        try:  # send itself can time out (metadata, a full buffer while the broker is away)
            if self._partitions is None:
                self._partitions = len(self._producer.partitions_for(self.topic))
            # The partition is fixed for the sink's life (not the default partitioner's, which follows a metadata
            # refresh): a heartbeat lands where the trades it covers are, even if partitions are added meanwhile.
            partition = home_partition(key.decode(), self._partitions)
            self._pending.append(self._producer.send(self.topic, key=key, value=value, partition=partition))
        except KafkaError as exc:
            raise ServiceError(f"Kafka did not take a send to {self.topic}: {type(exc).__name__}: {exc}") from exc

    def send_trade(self, trade: Trade) -> None:
        self._send(*messages.encode_trade(trade))

    def send_heartbeat(self, heartbeat: messages.Heartbeat) -> None:
        """Keyed by its symbol: it follows that symbol's trades in their partition, so a reader that sees it has
        seen every trade it speaks of."""
        self._send(*messages.encode_heartbeat(heartbeat))

    def flush(self, timeout_s: float = 120.0) -> int:
        """Wait until every send so far is acknowledged; returns how many were. Raises if any failed."""
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout_s)
            for future in pending:
                future.get(timeout=0)
        except KafkaError as exc:
            raise ServiceError(f"Kafka did not acknowledge a send to {self.topic}: {type(exc).__name__}: {exc}") \
                from exc
        return len(pending)

    def close(self) -> None:
        try:
            self._producer.close(timeout=30)
        except KafkaError:
            log.warning("closing the Kafka producer failed", exc_info=True)


def _messages_between(consumer: KafkaConsumer, tp: TopicPartition, lower: int, upper: int,
                      keys: set[bytes] | None = None) -> Iterator[Trade | messages.Heartbeat]:
    """The decodable messages at offsets [lower, upper) of one assigned partition (only those keyed by ``keys``,
    if given: the rest is not decoded). Those the job refuses (quarantine) are skipped here."""
    consumer.seek(tp, lower)
    while consumer.position(tp) < upper:
        batch = consumer.poll(timeout_ms=5000, max_records=5000).get(tp, [])
        if not batch:
            return
        for record in batch:
            if record.offset >= upper:
                return
            if keys is not None and record.key not in keys:
                continue
            try:  # what the job accepts: a forged heartbeat from the future must not set where a producer resumes
                yield messages.classify(record.value, record.timestamp)
            except messages.MalformedMessage:
                continue


def _trades_between(consumer: KafkaConsumer, tp: TopicPartition, lower: int, upper: int) -> Iterator[Trade]:
    for message in _messages_between(consumer, tp, lower, upper):
        if isinstance(message, Trade):
            yield message


def home_partition(symbol: str, partitions: int) -> int:
    """Where ``TradeSink`` (and any producer's default partitioner: murmur2 of the key, as Java's) puts a symbol's
    messages in a topic of ``partitions``."""
    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions


def _scan(bootstrap: str, topic: str, visit: Callable[[KafkaConsumer, TopicPartition, int, int, int], None],
          options: Options = None) -> None:
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 bootstrap_timeout_ms=10_000, request_timeout_ms=30_000, **client_options(options))
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return
        begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        for tp in tps:
            consumer.assign([tp])
            visit(consumer, tp, begins[tp], ends[tp], len(tps))
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from exc
    finally:
        consumer.close()


def resume_points(bootstrap: str, topic: str, symbols: Iterable[str], max_scan: int | None = 1_000_000,
                  options: Options = None) -> dict[str, messages.ResumePoint]:
    """Per symbol: where a restarted producer resumes. The newest coverage a heartbeat declared (its T), and the
    highest agg id up to which the trades the topic holds are unbroken (with its trade's time).

    Every partition is read backwards from its end in growing steps (messages of other keys are not decoded).
    A symbol's home partition (where its key hashes) is read until its trades and a heartbeat of it were seen,
    other partitions only at their tail (foreign copies count too), or, for a symbol found there (its home before
    partitions were added), until a heartbeat of it was seen too. ``max_scan`` bounds the messages read per
    partition (``None``: the whole partition). A caller that finds the answer implausible (far behind the exchange)
    asks again with ``max_scan=None``.

    Unbroken, not highest: a heartbeat is sent only once every trade before it was acknowledged, but a send that
    failed (a record batch that expired while a later one was written) can leave a hole among the trades after the
    newest heartbeat. Resuming after the highest id would jump over it and the next heartbeat would declare it
    complete; so ids are followed up from the last one before the coverage's end (``first_hole``), and the
    producer resumes at the first one missing (what follows it is sent again: duplicates, which the job skips).
    """
    wanted = set(symbols)
    keys = {s.encode() for s in wanted}
    seen: dict[str, dict[int, int]] = {s: {} for s in wanted}  # agg id -> trade time, of the trades read
    away: dict[str, list[int]] = {s: [] for s in wanted}  # times of those read outside the symbol's home partition
    covered: dict[str, int] = {}
    count = [1]  # the topic's partitions

    def visit(consumer: KafkaConsumer, tp: TopicPartition, begin: int, end: int, partitions: int) -> None:
        home = {s for s in wanted if home_partition(s, partitions) == tp.partition}
        here: set[str] = set()  # symbols with trades in this partition (a former home, after partitions were added)
        count[0] = partitions
        step, upper = 1000, end
        while upper > begin and (max_scan is None or end - upper < max_scan):
            lower = max(begin, upper - step)
            for message in _messages_between(consumer, tp, lower, upper, keys):
                if isinstance(message, Trade):
                    if message.symbol in wanted:
                        seen[message.symbol][message.agg_id] = message.event_time_ms
                        here.add(message.symbol)
                        if message.symbol not in home:
                            away[message.symbol].append(message.event_time_ms)
                elif message.symbol in wanted:
                    covered[message.symbol] = max(covered.get(message.symbol, 0), message.complete_before_ms)
            upper, step = lower, step * 4
            if max_scan is not None and all(seen[s] and s in covered for s in home) and here <= covered.keys():
                return  # every symbol living here is found, with its coverage (a partition of none: its tail)

    _scan(bootstrap, topic, visit, options)
    return {s: _resume_point(s, seen[s], covered.get(s), away[s], count[0], topic) for s in wanted
            if seen[s] or s in covered}


def _resume_point(symbol: str, seen: Mapping[int, int], covered: int | None, away: list[int], partitions: int,
                  topic: str) -> messages.ResumePoint:
    """One symbol's resume point from what the scan read (``resume_points``)."""
    # Trades not yet covered, in a partition that is no longer the symbol's home (partitions were added): this
    # producer's heartbeats go to the new home, so it sends them again there first (``first_hole``).
    moved = any(t >= (covered if covered is not None else t) for t in away)
    if moved:
        log.warning("%s: trades after its newest coverage are outside its home partition (were partitions added?); "
                    "sending them again to partition %d before any heartbeat", symbol,
                    home_partition(symbol, partitions))
    last = first_hole(seen, covered, moved)
    if last is None:
        return messages.ResumePoint(None, None, covered)
    above = [i for i, t in seen.items() if i > last and t >= (covered if covered is not None else t)]
    if above and not moved:
        log.warning("%s: agg id %d is missing from %s, which holds %d trades above it (a send that failed, or an "
                    "invalid record, which is never published); resuming at %d: those are sent again", symbol,
                    last + 1, topic, len(above), last + 1)
    return messages.ResumePoint(last, seen.get(last, seen.get(last + 1)), covered)


def first_hole(seen: Mapping[int, int], covered_before_ms: int | None, moved: bool = False) -> int | None:
    """The agg id a producer resumes after: from the highest id with a trade time before the coverage's end (all
    acknowledged before the heartbeat that declared it), the last of the ids that follow it without a gap. With
    no coverage, or no trade before its end, from the lowest id at or after it. ``moved``: no further than that
    start (what follows is sent again). ``None`` if no trade was read."""
    if not seen:
        return None
    before = [i for i, t in seen.items() if covered_before_ms is not None and t < covered_before_ms]
    after = [i for i, t in seen.items() if covered_before_ms is None or t >= covered_before_ms]
    if not after:
        return max(before)
    last = max(before) if before else min(after) - 1
    while not moved and last + 1 in seen:
        last += 1
    return last


def last_agg_ids(bootstrap: str, topic: str, symbols: Iterable[str], options: Options = None) -> dict[str, int]:
    """The highest agg id per symbol (``resume_points`` without the coverage)."""
    return {s: p.last_agg_id for s, p in resume_points(bootstrap, topic, symbols, options=options).items()
            if p.last_agg_id is not None}


def published_ranges(bootstrap: str, topic: str, symbols: Iterable[str],
                     options: Options = None) -> dict[str, list[tuple[int, int]]]:
    """Exactly which agg ids of ``symbols`` the topic holds, as ranges: a full scan, for replays that overlap or
    precede what was published before."""
    wanted, runs = set(symbols), defaultdict[str, list[tuple[int, int]]](list)

    def visit(consumer: KafkaConsumer, tp: TopicPartition, begin: int, end: int, _partitions: int) -> None:
        # Runs of consecutive ids, extended as they come (a symbol's ids arrive in order in its partition): memory
        # grows with the gaps and repeats in the topic, not with its length (never every id in a list).
        for trade in _trades_between(consumer, tp, begin, end):
            if trade.symbol not in wanted:
                continue
            mine = runs[trade.symbol]
            if mine and mine[-1][0] <= trade.agg_id <= mine[-1][1] + 1:
                mine[-1] = (mine[-1][0], max(mine[-1][1], trade.agg_id))
            else:
                mine.append((trade.agg_id, trade.agg_id))
                if len(mine) > 100_000:  # out of order for long: fold now and then
                    runs[trade.symbol] = mine = coverage.union(mine)

    _scan(bootstrap, topic, visit, options)
    return {symbol: coverage.union(found) for symbol, found in runs.items()}
