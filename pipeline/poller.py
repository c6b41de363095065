"""Live polling: page each symbol's aggTrades by ``fromId`` from a ``ExchangeSource`` and say how complete each is.

Each symbol moves on its own: a busy symbol catching up fetches page after page while a quiet one is asked again
only every ``poll_interval_s``. After every answer the poller knows up to when the symbol is complete::

    full page (1000 trades, more to come)   complete before the page's last trade time T_last
    short page (caught up)                  complete before the server's clock (its Date) - lag_ms
    short page, no Date header              complete before its last trade time (the local clock proves nothing)

and once that crosses a minute boundary it yields a coverage ``Heartbeat(symbol, covered_from, complete_before)``:
every trade of the symbol in that stretch is published. The job closes a symbol's windows from those alone, so
a catch-up, a ban or a restart can delay finality but never make a trade late.

A first start begins at the start of a minute (``--start``, rounded down, or the current minute), so the first
window a symbol closes is complete. A restart resumes after the highest agg id in Kafka and continues the coverage
from the newest heartbeat found there (``ResumePoint``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat, ResumePoint
from pipeline.core.ports import MAX_LIMIT, ExchangeSource, Page
from pipeline.core.trades import MalformedTrade, Trade, parse_rest
from pipeline.core.windows import WINDOW_MS, window_start_ms
from pipeline.errors import BadAnswer, ConfigError, ExchangeUnavailable, RateLimited
from pipeline.producer import Item

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
# An exchange that has never answered since start (a wrong --base-url, a proxy answering HTML, no route) is a
# configuration problem after this long; once it has answered, outages are retried for as long as they last.
NEVER_REACHED_S = 300.0


class NeverReached(ConfigError):
    """No answer that is Binance's since the producer started, for ``NEVER_REACHED_S``."""


class VirtualClock:
    """Time that passes only when slept: replays a recording's schedule exactly, without waiting."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += max(0.0, seconds)


@dataclasses.dataclass
class SymbolState:
    """Where one symbol stands: the next agg id to ask for and the stretch known complete."""

    symbol: str
    covered_from_ms: int
    cursor: int | None = None  # None: not started yet; ask by start time
    complete_before_ms: int = 0
    announced_ms: int | None = None  # the last heartbeat's complete_before_ms
    due_s: float = 0.0  # when to ask next (clock seconds)

    def behind_ms(self, now_ms: int) -> int:
        return max(0, now_ms - max(self.complete_before_ms, self.covered_from_ms))


def start_states(symbols: Iterable[str], resume: Mapping[str, ResumePoint], start_ms: int) -> dict[str, SymbolState]:
    """A resumed symbol continues after its last agg id in Kafka; a new one starts at ``start_ms``'s minute."""
    states = {}
    for symbol in symbols:
        point = resume.get(symbol)
        if point is None:
            begin = window_start_ms(start_ms)
            states[symbol] = SymbolState(symbol, begin, complete_before_ms=begin)
        elif point.last_agg_id is None:
            # Only a heartbeat (its trades are older than the scan reached): go on from its T, located by time.
            assert point.complete_before_ms is not None
            states[symbol] = SymbolState(symbol, point.complete_before_ms, complete_before_ms=point.complete_before_ms)
        else:
            # Trades after the newest heartbeat (or after the last trade's time, if there is no heartbeat) with
            # ids up to last_agg_id are in Kafka; the rest come next, by id. So the coverage goes on from there.
            since = point.complete_before_ms if point.complete_before_ms is not None else point.last_trade_ms
            assert since is not None
            states[symbol] = SymbolState(symbol, since, cursor=point.last_agg_id + 1, complete_before_ms=since)
    return states


def _ids_and_times(page: Page) -> list[tuple[int, int]]:
    return [(r["a"], r["T"]) for r in page.records
            if isinstance(r, dict) and type(r.get("a")) is int and type(r.get("T")) is int]


def first_id_at(source: ExchangeSource, symbol: str, time_ms: int) -> int | None:
    """The lowest agg id with a trade at or after ``time_ms`` (the newest id + 1 if none yet; None if the symbol
    has no trade at all), without trusting how Binance cuts a time range at ``limit``::

        ask the minute [time_ms, +60 s): fewer than 1000 trades -> the first one is the answer (1 request)
        otherwise binary search by fromId over ids, whose times never decrease (~32 requests)
    """
    window = _ids_and_times(source.agg_trades(symbol, start_time_ms=time_ms, end_time_ms=time_ms + WINDOW_MS - 1))
    if 0 < len(window) < MAX_LIMIT:
        return min(i for i, _ in window)
    newest = _ids_and_times(source.agg_trades(symbol, limit=1))
    if not newest:
        return None
    best, newest_time = newest[-1]
    if newest_time < time_ms:
        return best + 1
    low, high = 0, best - 1
    while low <= high:
        middle = (low + high) // 2
        probe = _ids_and_times(source.agg_trades(symbol, from_id=middle, limit=1))
        if not probe:
            break
        agg_id, t = probe[0]
        if t >= time_ms:
            best, high = min(best, agg_id), middle - 1
        else:
            low = agg_id + 1
    return best


def trades_between(source: ExchangeSource, symbol: str, from_ms: int, until_ms: int,
                   counters: Counters) -> Iterator[Trade]:
    """Every aggTrade of ``symbol`` with ``from_ms <= T < until_ms``, page by page (memory: one page): the first
    id by ``first_id_at``, then ``fromId`` pages. The cursor moves past the highest id a page *sent*, so a record
    that does not parse is counted and skipped, never the end of the walk; a page with no usable id at all is an
    error, not the end (the caller's heartbeat would otherwise claim the rest complete)."""
    cursor = first_id_at(source, symbol, from_ms)
    while cursor is not None:
        page = source.agg_trades(symbol, from_id=cursor, limit=MAX_LIMIT)
        sent = _ids_and_times(page)
        for trade in _parse_page(symbol, page.records, counters):
            if from_ms <= trade.event_time_ms < until_ms:
                yield trade
        if len(page.records) < MAX_LIMIT:
            return
        if not sent:
            raise BadAnswer(f"Binance sent {symbol} a full page without one usable agg id (fromId={cursor})")
        if max(t for _, t in sent) >= until_ms:
            return
        cursor = max(i for i, _ in sent) + 1


def _parse_page(symbol: str, records: Sequence[object], counters: Counters) -> list[Trade]:
    trades = []
    for record in records:
        try:
            trades.append(parse_rest(symbol, record))  # type: ignore[arg-type]
        except MalformedTrade as exc:
            counters.rejected += 1
            log.error("%s: rejected a record Binance sent: %s", symbol, exc)
    return trades


def poll(source: ExchangeSource, states: Mapping[str, SymbolState], counters: Counters, *, lag_ms: int,
         poll_interval_s: float = 1.0, clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] = lambda: False,
         on_answer: Callable[[], None] = lambda: None, never_reached_s: float = NEVER_REACHED_S) -> Iterator[Item]:
    """Trades and coverage heartbeats of every symbol, until ``stop()``.

    Exchange trouble never ends the loop: 429/418 waits out Retry-After (no request meanwhile), and every other
    answer that is not a page of trades (5xx, timeouts, resets, HTML or truncated bodies) is counted, logged and
    retried with a backoff that grows with consecutive failures (and lasts at least a 5xx's Retry-After). Every
    wait is ``sleep``'s: the CLI's ends at a signal. Only a request Binance rejects as invalid (an unknown symbol:
    ``ExchangeError``) is raised: that is a configuration error; so is an exchange that has not answered once
    since start within ``never_reached_s`` (``NeverReached``).
    """
    failures = 0
    while not stop():
        now_s = clock()
        due = [s for s in states.values() if s.due_s <= now_s]
        if not due:
            sleep(max(0.0, min(s.due_s for s in states.values()) - now_s))
            continue
        for state in due:
            if stop():
                return
            try:
                if state.cursor is None:
                    state.cursor = first_id_at(source, state.symbol, state.covered_from_ms)
                    counters.answered = True
                if state.cursor is None:  # no trade at all yet: ask again later
                    state.due_s = clock() + poll_interval_s
                    continue
                page = source.agg_trades(state.symbol, from_id=state.cursor)
                if len(page.records) >= MAX_LIMIT and not _ids_and_times(page):  # asked again at once: a hot loop
                    raise BadAnswer(f"Binance sent {state.symbol} a full page without one usable agg id "
                                    f"(fromId={state.cursor})")
            except (RateLimited, ExchangeUnavailable) as exc:
                failures = _wait_out(exc, failures, counters, sleep, clock, never_reached_s)
                break
            failures, counters.answered = 0, True
            yield from _take(state, page, counters, lag_ms)
            full = len(page.records) >= MAX_LIMIT
            state.due_s = clock() + (0.0 if full else poll_interval_s)
            on_answer()


def _wait_out(exc: RateLimited | ExchangeUnavailable, failures: int, counters: Counters,
              sleep: Callable[[float], None], clock: Callable[[], float] = time.time,
              never_reached_s: float = NEVER_REACHED_S) -> int:
    """Count and log an exchange failure, then wait as it asks: Retry-After for 429/418 (no request meanwhile), a
    backoff growing with consecutive failures otherwise, or a 5xx's Retry-After if that is longer. Returns the
    consecutive failures so far."""
    counters.exchange_errors += 1
    if isinstance(exc, RateLimited):  # only Binance says that: it was reached
        counters.answered = True
    elif not counters.answered:
        now = clock()
        counters.failing_since_s = counters.failing_since_s if counters.failing_since_s is not None else now
        if now - counters.failing_since_s >= never_reached_s:
            raise NeverReached(f"no usable answer from the exchange since start ({now - counters.failing_since_s:.0f} "
                               f"s, {counters.exchange_errors} failures; the last: {exc}): check --base-url and the "
                               "network") from exc
    if isinstance(exc, RateLimited):
        log.warning("%s; sending nothing until it passes", exc)
        sleep(exc.retry_after_s)
        return failures
    failures += 1
    wait = max(min(MAX_BACKOFF_S, 2.0 ** min(failures, 5)), exc.retry_after_s)
    log.warning("%s; trying again in %.0fs", exc, wait)
    sleep(wait)
    return failures


def _take(state: SymbolState, page: Page, counters: Counters, lag_ms: int) -> Iterator[Item]:
    trades = _parse_page(state.symbol, page.records, counters)
    ids = [r["a"] for r in page.records if isinstance(r, dict) and type(r.get("a")) is int]
    if ids:  # past malformed records too (counted as rejected), or they would be asked for forever
        state.cursor = max(max(ids) + 1, state.cursor or 0)
    yield from trades
    if len(page.records) >= MAX_LIMIT:
        # More to come; trades at the last one's millisecond may continue on the next page.
        complete = max((t.event_time_ms for t in trades), default=state.complete_before_ms)
    elif page.server_time_ms is not None:
        complete = page.server_time_ms - lag_ms
    else:
        # No Date header: the exchange's clock is unknown, and the local one may run ahead of it. Every trade
        # before the newest one it sent has been sent (ids ascend, times never decrease): complete only before that.
        counters.undated += 1
        complete = max((t.event_time_ms for t in trades), default=state.complete_before_ms)
    state.complete_before_ms = max(state.complete_before_ms, complete)
    announced = state.announced_ms
    if state.complete_before_ms > state.covered_from_ms and (
            announced is None or state.complete_before_ms // WINDOW_MS > announced // WINDOW_MS):
        state.announced_ms = state.complete_before_ms
        yield Heartbeat(state.symbol, state.covered_from_ms, state.complete_before_ms)


def final_heartbeats(states: Iterable[SymbolState]) -> list[Heartbeat]:
    """On a clean stop: the latest coverage of every symbol, even if it closes no new minute."""
    return [Heartbeat(s.symbol, s.covered_from_ms, s.complete_before_ms) for s in states
            if s.complete_before_ms > s.covered_from_ms and s.complete_before_ms != s.announced_ms]


def lag_report(states: Iterable[SymbolState], now_ms: int) -> str:
    """``BTCUSDT 2.1s ETHUSDT 2.3s ...``: how far behind now each symbol's complete stretch ends."""
    return "behind now: " + " ".join(f"{s.symbol} {s.behind_ms(now_ms) / 1000:.1f}s" for s in states)


def _newest_page(source: ExchangeSource, symbol: str, counters: Counters, sleep: Callable[[float], None],
                 stop: Callable[[], bool], clock: Callable[[], float], never_reached_s: float) -> Page | None:
    """``limit=1``: the newest trade, asked until Binance answers (the same waits as ``poll``); None if stopped."""
    failures = 0
    while not stop():
        try:
            page = source.agg_trades(symbol, limit=1)
            counters.answered = True
            return page
        except (RateLimited, ExchangeUnavailable) as exc:
            failures = _wait_out(exc, failures, counters, sleep, clock, never_reached_s)
    return None


def check_resume(source: ExchangeSource, resume: Mapping[str, ResumePoint], max_catch_up_ids: int,
                 counters: Counters | None = None, sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.time,
                 never_reached_s: float = NEVER_REACHED_S) -> dict[str, str]:
    """Compare each resume point with the exchange's newest agg id (one request per symbol); returns the
    implausible ones with the reason. An id above the newest cannot be Binance's (foreign data in the topic); one
    far below it means the topic's tail is not this producer's (a replay after it?) or a very long downtime."""
    problems = {}
    for symbol, point in resume.items():
        if point.last_agg_id is None:
            continue
        page = _newest_page(source, symbol, counters if counters is not None else Counters(), sleep, stop, clock,
                            never_reached_s)
        if page is None:
            break
        newest = max((r["a"] for r in page.records if isinstance(r, dict) and type(r.get("a")) is int), default=None)
        if newest is None:
            continue
        if point.last_agg_id > newest:
            problems[symbol] = (f"the topic holds agg id {point.last_agg_id} for {symbol}, above Binance's newest "
                                f"({newest}): those trades are not Binance's {symbol}")
        elif newest - point.last_agg_id > max_catch_up_ids:
            problems[symbol] = (f"the topic's newest {symbol} trade is agg id {point.last_agg_id}, "
                                f"{newest - point.last_agg_id:,} behind Binance's newest ({newest}); more than "
                                f"--max-catch-up-ids {max_catch_up_ids:,}")
    return problems
