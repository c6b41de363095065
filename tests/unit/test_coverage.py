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
