"""Sets of integers kept as sorted, disjoint, inclusive ranges: the job's memory of what it has seen.

Two uses, one arithmetic:

- agg ids merged into a window (``"3500000100-3500001699"``): a redelivered trade is recognised by its id, and a
  trade's id always falls in the same window (its event time never changes), so the ranges live on the window row;
- the event time a symbol is known complete over, from producers' coverage heartbeats (``[from, T)``, stored as
  the inclusive ms range ``from..T-1``). A window is final once its whole minute lies inside one range::

      coverage:   |=========== from..T-1 ===========|
      windows:  [12:00)[12:01)[12:02)[12:03)[12:04)[12:05)
                   open  final  final  final  open (T falls inside it)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Range = tuple[int, int]  # inclusive: (first, last)


def union(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, merged ranges; adjacent ones join: [(5, 7), (1, 3), (4, 4)] -> [(1, 7)]."""
    out: list[Range] = []
    for first, last in sorted(ranges):
        if first > last:
            continue
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def overlaps(ranges: Sequence[Range], first: int, last: int) -> bool:
    """Whether any of ``ranges`` (merged) shares a value with ``first..last``."""
    return any(a <= last and first <= b for a, b in ranges)


def contains(ranges: Sequence[Range], value: int) -> bool:
    return any(a <= value <= b for a, b in ranges)


def covers(ranges: Sequence[Range], first: int, last: int) -> bool:
    """Whether one range (of merged ``ranges``) holds all of ``first..last``."""
    return any(a <= first and last <= b for a, b in ranges)


def covers_window(coverage: Sequence[Range], start_ms: int, end_ms: int) -> bool:
    """Whether the minute ``[start_ms, end_ms)`` is known complete."""
    return covers(coverage, start_ms, end_ms - 1)


def render(ranges: Sequence[Range]) -> str:
    """``[(1, 3), (5, 5)]`` -> ``"1-3,5-5"`` (the text a window row keeps)."""
    return ",".join(f"{a}-{b}" for a, b in ranges)


def parse(text: str | None) -> list[Range]:
    """The inverse of ``render``; empty or ``None`` is the empty set."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.append((int(first), int(last)))
    return union(out)
