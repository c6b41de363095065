"""``coverage.whole_windows``: a batch's heartbeats as the offset at which each window is first wholly covered, so
that lateness depends on a trade's window (as finality does), never on where Spark cut the batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import coverage

heartbeat = st.tuples(st.integers(0, 50), st.integers(0, 60), st.integers(0, 60))  # offset, from, until
WINDOW = 10


def brute_force(heartbeats: list[tuple[int, int, int]], start: int) -> int | None:
    """The lowest offset by which every millisecond of [start, start + WINDOW) is covered by some heartbeat."""
    firsts = [min((o for o, a, b in heartbeats if a <= t < b), default=None) for t in range(start, start + WINDOW)]
    return None if None in firsts else max(firsts)  # type: ignore[type-var]


@given(st.lists(heartbeat, max_size=12))
def test_each_window_gets_the_offset_that_closed_all_of_it(heartbeats: list[tuple[int, int, int]]) -> None:
    pieces = coverage.whole_windows(coverage.earliest_cover(heartbeats), WINDOW)
    for start in range(0, 60, WINDOW):
        got = [o for a, b, o in pieces if a <= start and start + WINDOW <= b]
        assert got == ([] if brute_force(heartbeats, start) is None else [brute_force(heartbeats, start)]), pieces
    assert all(a % WINDOW == 0 and b % WINDOW == 0 and a < b for a, b, _ in pieces)
    assert all(p[1] <= q[0] for p, q in zip(pieces, pieces[1:], strict=False))
    assert all(not (p[1] == q[0] and p[2] == q[2]) for p, q in zip(pieces, pieces[1:], strict=False))


def test_a_heartbeat_ending_inside_a_minute_covers_none_of_it_and_a_day_stays_small() -> None:
    assert coverage.whole_windows(coverage.earliest_cover([(7, 0, 90), (9, 0, 200)]), 60) == [(0, 60, 7),
                                                                                           (60, 180, 9)]
    assert coverage.whole_windows([(5, 65, 3)], 60) == []
    # a day of one live heartbeat a minute, each from the session's start: one piece per heartbeat, no more
    day = coverage.earliest_cover([(i * 10, 0, (i + 1) * 60_000 + 7_000) for i in range(1440)])
    pieces = coverage.whole_windows(day, 60_000)
    assert len(pieces) == 1440 and pieces[0] == (0, 60_000, 0) and pieces[-1] == (1439 * 60_000, 1440 * 60_000,
                                                                                     14390)
