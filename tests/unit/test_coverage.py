"""``coverage.earliest_cover``: the heartbeats of a batch as a step function a trade is looked up in (issue 18)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import coverage

heartbeat = st.tuples(st.integers(0, 50), st.integers(0, 40), st.integers(0, 40))  # offset, from, until


def brute_force(heartbeats: list[tuple[int, int, int]], t: int) -> int | None:
    return min((o for o, a, b in heartbeats if a <= t < b), default=None)


def lookup(pieces: list[coverage.Piece], t: int) -> int | None:
    return next((o for a, b, o in pieces if a <= t < b), None)


@given(st.lists(heartbeat, max_size=12))
def test_each_time_gets_the_lowest_offset_of_the_heartbeats_covering_it(heartbeats: list[tuple[int, int, int]]) -> None:
    pieces = coverage.earliest_cover(heartbeats)
    for t in range(-1, 42):
        assert lookup(pieces, t) == brute_force(heartbeats, t), (t, pieces)


@given(st.lists(heartbeat, max_size=12))
def test_pieces_are_sorted_disjoint_and_at_most_2n(heartbeats: list[tuple[int, int, int]]) -> None:
    pieces = coverage.earliest_cover(heartbeats)
    assert len(pieces) <= max(0, 2 * len(heartbeats) - 1)
    assert all(a < b for a, b, _ in pieces)
    assert all(p[1] <= q[0] for p, q in zip(pieces, pieces[1:], strict=False))
    # neighbours with the same offset are one piece
    assert all(not (p[1] == q[0] and p[2] == q[2]) for p, q in zip(pieces, pieces[1:], strict=False))


def test_the_docstring_example_and_live_modes_nested_heartbeats() -> None:
    assert coverage.earliest_cover([(7, 0, 60), (9, 0, 120), (4, 100, 130)]) == [
        (0, 60, 7), (60, 100, 9), (100, 130, 4)]
    # a day of one live heartbeat a minute, each from the session's start: one piece per heartbeat
    day = [(i * 10, 0, (i + 1) * 60_000) for i in range(1440)]
    pieces = coverage.earliest_cover(day)
    assert len(pieces) == 1440 and pieces[0] == (0, 60_000, 0) and pieces[-1] == (1439 * 60_000, 1440 * 60_000, 14390)


@given(st.lists(heartbeat, max_size=12))
def test_first_cover_finds_the_piece_by_bisection(heartbeats: list[tuple[int, int, int]]) -> None:
    pieces = coverage.earliest_cover(heartbeats)
    starts = [a for a, _, _ in pieces]
    for t in range(-1, 42):
        assert coverage.first_cover(pieces, starts, t) == brute_force(heartbeats, t)


spans = st.lists(st.tuples(st.integers(0, 600), st.integers(0, 600)).map(sorted).map(tuple), max_size=6)


@given(spans, spans)
def test_subtract_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    ra, rb = coverage.union(a), coverage.union(b)
    got = coverage.subtract(ra, rb)
    assert {v for x, y in got for v in range(x, y + 1)} == (
        {v for x, y in ra for v in range(x, y + 1)} - {v for x, y in rb for v in range(x, y + 1)})
    assert got == coverage.union(got)


@given(spans, spans)
def test_newly_final_finds_exactly_the_windows_that_became_covered(old: list[tuple[int, int]],
                                                                  new: list[tuple[int, int]]) -> None:
    """Windows of 10 units: those inside the grown coverage and not inside the old one are all found by the spans
    (as the finalize UPDATE selects them: start in [lo, hi], end <= limit), and the spans find none outside it."""
    before = coverage.union(old)
    after = coverage.union([*before, *new])
    found = {s for s in range(0, 620, 10) for lo, hi, limit in coverage.newly_final(after, before, 10)
             if lo <= s <= hi and s + 10 <= limit}
    became = {s for s in range(0, 620, 10)
              if coverage.covers_window(after, s, s + 10) and not coverage.covers_window(before, s, s + 10)}
    assert became <= found
    assert all(coverage.covers_window(after, s, s + 10) for s in found)
