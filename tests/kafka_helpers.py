"""Reading a topic back completely, for assertions."""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition

from pipeline.core import messages
from pipeline.core.trades import Trade


def read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every (partition, offset, key, value) in the topic, up to its end offsets now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[tuple[int, int, bytes | None, bytes]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=2000).items():
                out.extend((tp.partition, r.offset, r.key, r.value) for r in records if r.offset < ends[tp])
        return out
    finally:
        consumer.close()


def trades_in(bootstrap: str, topic: str) -> list[Trade]:
    """The trades in the topic, in partition-then-offset order (each symbol's messages stay in one partition)."""
    decoded = [messages.decode(value) for _, _, _, value in sorted(read_all(bootstrap, topic))]
    return [m for m in decoded if isinstance(m, Trade)]
