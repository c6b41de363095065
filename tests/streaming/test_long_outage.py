"""A restart after a long outage (issue 18): a day of live-mode traffic of 20 skewed symbols waits in the topic, one
coverage heartbeat per symbol per minute (28,800 heartbeats); ``pipeline process --until-idle`` must catch it up in
its first batch (the default batch size holds it all), or in smaller ones, every window exact and final, nothing late
or quarantined.

Before issue 18 each heartbeat of a batch became an OR term of one expression: 600 of them overflowed Spark's
stack (StackOverflowError, exit 3, nothing written), and the same batch met every restart."""

from __future__ import annotations

import re
import time

import pytest

from pipeline.adapters import kafka_io
from pipeline.adapters.mysql import reads
from pipeline.bench import workload
from pipeline.core.messages import Heartbeat
from pipeline.settings import Settings
from tests.cli_helpers import ok as cli
from tests.reference_rows import assert_rows_match


@pytest.mark.parametrize(("symbols", "hours", "batch_size", "batches"), [
    (20, 24, None, 1),  # 81,276 messages: one batch through Spark
    (5, 6, "1000", 5),  # 5,080 messages in batches of at most 1,000, computed in the driver
])
def test_a_long_outage_is_caught_up_exact_and_final(settings_for: Settings, symbols: int, hours: int,
                                                    batch_size: str | None, batches: int) -> None:
    """20 symbols x 24 h in one batch (the default size holds it all), and a smaller outage cut into batches of
    1,000 (``--max-offsets-per-trigger``, what an operator does when a batch is too big): heartbeats and the trades
    they cover then fall in different batches, and the driver's path computes them."""
    url, bootstrap = settings_for.mysql_url, settings_for.kafka_bootstrap or ""
    assert url is not None
    traffic = workload.live_outage(symbols=symbols, minutes=hours * 60, end_ms=int(time.time() * 1000))
    assert traffic.heartbeats == symbols * hours * 60
    kafka_io.ensure_topic(bootstrap, settings_for.topic)
    sink = kafka_io.TradeSink(bootstrap, settings_for.topic)
    try:
        for message in traffic.messages:
            if isinstance(message, Heartbeat):
                sink.send_heartbeat(message)
            else:
                sink.send_trade(message)
        sink.flush()
    finally:
        sink.close()

    size = ["--max-offsets-per-trigger", batch_size] if batch_size else []
    result = cli(settings_for, "process", "--until-idle", *size, timeout=900)

    read = re.search(r"process: (\d+) batches, (\d+) Kafka messages", result.stdout)
    assert read and int(read.group(1)) >= batches and int(read.group(2)) == len(traffic.messages), result.stdout
    assert (f" {len(traffic.trades)} trades counted, 0 duplicates ignored, 0 late trades") in result.stdout, \
        result.stdout
    assert " 0 quarantined" in result.stdout, result.stdout
    assert_rows_match(url, traffic.trades, all_final=True)
    # the quiet symbols' minutes without a trade have no row, and every symbol is covered to the outage's end
    rows = reads.read_windows(url)
    assert {r.symbol for r in rows} == set(workload.SYMBOLS[:symbols])
