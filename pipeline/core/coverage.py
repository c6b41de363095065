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

import bisect
import heapq
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


Piece = tuple[int, int, int]  # (from_ms, until_ms, offset): times in [from_ms, until_ms) first covered at offset


def earliest_cover(heartbeats: Iterable[tuple[int, int, int]]) -> list[Piece]:
    """For heartbeats ``(offset, from_ms, until_ms)`` of one (symbol, partition): the step function "the lowest
    offset of a heartbeat whose ``[from_ms, until_ms)`` holds t", as sorted, disjoint pieces (times no heartbeat
    covers have none). A trade at (offset o, time t) sits behind a heartbeat that covers it iff the piece holding
    t has an offset below o: one lookup per trade, whatever the number of heartbeats::

        heartbeats (offset: [from, until)):  7: [0, 60)   9: [0, 120)   4: [100, 130)
        pieces:                              [0, 60) 7 | [60, 100) 9 | [100, 130) 4

    At most 2n - 1 pieces for n heartbeats; O(n log n)."""
    spans = sorted((start, end, offset) for offset, start, end in heartbeats if end > start)
    bounds = sorted({t for start, end, _ in spans for t in (start, end)})
    pieces: list[Piece] = []
    active: list[tuple[int, int]] = []  # (offset, until_ms): a heap, stale entries dropped when seen
    i = 0
    for left, right in zip(bounds, bounds[1:], strict=False):
        while i < len(spans) and spans[i][0] <= left:
            heapq.heappush(active, (spans[i][2], spans[i][1]))
            i += 1
        while active and active[0][1] <= left:
            heapq.heappop(active)
        if not active:
            continue
        offset = active[0][0]
        if pieces and pieces[-1][1] == left and pieces[-1][2] == offset:
            pieces[-1] = (pieces[-1][0], right, offset)
        else:
            pieces.append((left, right, offset))
    return pieces


def whole_windows(pieces: Sequence[Piece], window_ms: int) -> list[Piece]:
    """``earliest_cover``'s pieces coarsened to whole windows: for each window every millisecond of which the
    pieces hold, the offset at which it is first wholly covered (the highest offset over its milliseconds); a window
    they hold only in part has none. Whether a trade is behind a heartbeat then depends on its window, as whether
    its window is final does, never on where Spark cut the batches::

        pieces (offset):   [0, 90) 7 | [90, 200) 9          windows of 60:  [0, 60) 7 | [60, 180) 9

    Adjacent windows with one offset share a piece: at most one piece per piece given plus one per boundary between
    pieces, whatever the time they span."""
    out: list[Piece] = []

    def emit(start: int, end: int, offset: int) -> None:
        if out and out[-1][1] == start and out[-1][2] == offset:
            out[-1] = (out[-1][0], end, offset)
        else:
            out.append((start, end, offset))

    i = 0
    while i < len(pieces):
        j = i
        while j + 1 < len(pieces) and pieces[j + 1][0] == pieces[j][1]:
            j += 1
        run, i = pieces[i:j + 1], j + 1  # pieces that join up, without a gap
        w, end, k = -(-run[0][0] // window_ms) * window_ms, run[-1][1], 0
        while w + window_ms <= end:
            while run[k][1] <= w:
                k += 1
            if w + window_ms <= run[k][1]:  # whole windows inside one piece
                last = run[k][1] // window_ms * window_ms
                emit(w, last, run[k][2])
                w = last
                continue
            highest, m = run[k][2], k  # a window across pieces: covered once the last of them is
            while run[m][1] < w + window_ms:
                m += 1
                highest = max(highest, run[m][2])
            emit(w, w + window_ms, highest)
            w += window_ms
    return out


def first_cover(pieces: Sequence[Piece], starts: Sequence[int], t: int) -> int | None:
    """The offset of the first heartbeat covering ``t`` (``earliest_cover``'s pieces, ``starts`` their from_ms), or
    None: a trade at a higher offset is behind a heartbeat that covers it."""
    i = bisect.bisect_right(starts, t) - 1
    return pieces[i][2] if i >= 0 and t < pieces[i][1] else None


def subtract(ranges: Sequence[Range], minus: Sequence[Range]) -> list[Range]:
    """The values of ``ranges`` that ``minus`` does not hold (both merged)."""
    out: list[Range] = []
    for first, last in ranges:
        for a, b in minus:
            if b < first or a > last:
                continue
            if a > first:
                out.append((first, a - 1))
            first = max(first, b + 1)
            if first > last:
                break
        if first <= last:
            out.append((first, last))
    return out


def newly_final(ranges: Sequence[Range], before: Sequence[Range], window_ms: int) -> list[tuple[int, int, int]]:
    """Where windows may have become final when coverage grew from ``before`` to ``ranges`` (both merged): for each
    stretch newly covered, ``(first start, last start, end limit)`` of the windows that touch it and lie inside the
    range holding it. A window wholly inside ``before`` was made final when that was covered, so the work is
    bounded by the time newly covered, not by the symbol's whole history."""
    out = []
    for a, b in subtract(ranges, before):
        first, last = next(r for r in ranges if r[0] <= a and b <= r[1])
        out.append((max(first, a - window_ms + 1), b, last + 1))
    return out
