"""``kafka_io.first_hole``: where a restarted producer resumes, from the trades and the coverage it read back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.adapters.kafka_io import first_hole

T = 1_000_000  # the newest heartbeat's T


def ids(first: int, last: int, time_of: int = T) -> dict[int, int]:
    """Agg ids ``first..last``, one a millisecond, the first at ``time_of``."""
    return {i: time_of + i - first for i in range(first, last + 1)}


def test_an_unbroken_run_resumes_after_its_highest_id() -> None:
    assert first_hole({**ids(100, 149, T - 50), **ids(150, 199)}, T) == 199


def test_a_hole_after_the_coverage_is_fetched_again() -> None:
    assert first_hole({**ids(100, 149, T - 50), **ids(150, 159), **ids(170, 199, T + 20)}, T) == 159
    assert first_hole({**ids(100, 149, T - 50), **ids(160, 199, T + 10)}, T) == 149  # right at the start


def test_old_trades_replayed_into_the_topic_are_no_hole_and_no_start() -> None:
    replayed = ids(1, 3_000, T - 10_000_000)
    assert first_hole({**replayed, **ids(100_000, 100_049, T - 50), **ids(100_050, 100_099)}, T) == 100_099


def test_without_coverage_the_run_starts_at_the_lowest_id_read() -> None:
    assert first_hole(ids(500, 520), None) == 520
    assert first_hole({**ids(500, 520), **ids(530, 540)}, None) == 520
    assert first_hole({}, None) is None


def test_trades_in_a_partition_no_longer_home_are_sent_again() -> None:
    assert first_hole({**ids(100, 149, T - 50), **ids(150, 199)}, T, moved=True) == 149
    assert first_hole(ids(150, 199), T, moved=True) == 149  # nothing before the coverage's end read: all again


@given(st.integers(1, 200), st.integers(0, 200), st.integers(1, 50), st.integers(0, 50))
def test_never_resumes_past_a_missing_id_after_the_coverage(before: int, good: int, gap: int, rest: int) -> None:
    seen = {**ids(1_000 - before, 999, T - before), **ids(1_000, 999 + good),
            **ids(1_000 + good + gap, 999 + good + gap + rest, T + good + gap)}
    last = first_hole(seen, T)
    assert last == 999 + good
    assert all(i in seen for i in range(1_000, last + 1))
