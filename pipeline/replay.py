"""Replay sources: recorded Binance answers (cassettes) and Binance public-data archives, as time-ordered items.

A cassette is played through the same ``BinanceClient`` and ``poller.poll`` loop as live mode, with no network,
on a virtual clock (a recorded Retry-After is slept in no time): the requests it makes are answered from the
recording, and the recording's end ends the source; its heartbeats vouch for what the recorded answers prove, as
live (a cassette cut short stops vouching where its answers stop). An archive vouches only for what it proves it
holds (``archives``): its whole day (or month) if its Binance checksum matches, else the stretch between its first
and last trade.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from pipeline.adapters import cassettes, kafka_io
from pipeline.adapters.archives import CHECKSUM_SUFFIX, Archive
from pipeline.adapters.binance import BinanceClient, make_session
from pipeline.core import times
from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Sequencer, Trade
from pipeline.errors import InputError
from pipeline.poller import VirtualClock, poll, start_states
from pipeline.producer import Item, Pacer, Progress, publish, time_order

log = logging.getLogger(__name__)


def cassette_starts(path: Path) -> dict[str, int]:
    """The symbols a cassette asked Binance about, in the order it first asked, with the start time of each
    symbol's first request (the poller starts there again, so its requests match the recording)."""
    try:
        data = yaml.safe_load(path.read_text())
        uris = [i["request"]["uri"] for i in data["interactions"]]
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such cassette") from exc
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable vcrpy cassette ({type(exc).__name__})") from exc
    starts: dict[str, int] = {}
    for uri in uris:
        query = parse_qs(urlsplit(uri).query)
        for symbol in query.get("symbol", []):
            if symbol not in starts:
                if "startTime" not in query:
                    raise InputError(f"{path}: the first request for {symbol} has no startTime: recorded by an "
                                     "older poller; record it again")
                starts[symbol] = int(query["startTime"][0])
    if not starts:
        raise InputError(f"{path}: the cassette holds no aggTrades requests")
    return starts


def cassette_items(path: Path, counters: Counters, lag_ms: int) -> list[Item]:
    """Everything a cassette yields, played through the live poller, in time order.

    Played fully before publishing starts: vcrpy patches HTTP process-wide, so two cassettes cannot be open at
    once, and a cassette is held in memory by vcrpy anyway.
    """
    starts = cassette_starts(path)
    items: list[Item] = []
    clock = VirtualClock()
    # No retries on playback: a recorded 5xx is played once, as it happened.
    client = BinanceClient(session=make_session(retries=0), clock=clock, sleep=clock.sleep)
    states = {s: start_states([s], {}, t)[s] for s, t in starts.items()}
    with cassettes.playback(path):
        try:
            for item in poll(client, states, counters, lag_ms=lag_ms, clock=clock, sleep=clock.sleep):
                items.append(item)
        except cassettes.CannotOverwriteExistingCassetteException:
            pass  # the recording ends here
    if client.requests_sent <= 1:
        raise InputError(f"{path}: the cassette's requests do not match this poller's (recorded elsewhere?)")
    return sorted(items, key=time_order)


def unverified_note(archive: Archive, beats: list[Heartbeat]) -> str | None:
    """For an archive not proved complete, what it vouches for (``beats``, its heartbeats), in words; None for a
    verified one (it vouches for its whole period)."""
    if archive.verified:
        return None
    why = ("a .csv, and Binance checksums only its .zip" if archive.path.suffix == ".csv"
           else f"no {archive.path.name}{CHECKSUM_SUFFIX} beside it")
    stretches = ", ".join(f"{_iso(b.covered_from_ms)} to {_iso(b.complete_before_ms)}" for b in beats[:3])
    if len(beats) > 3:
        stretches += f" and {len(beats) - 3} more stretches (gaps in its agg ids)"
    return (f"{archive.path.name} is not verified complete ({why}): it vouches only for "
            f"{stretches or 'no time at all'} (between its first and last trade), not its whole period; minutes "
            "outside stay open until another source covers them")


def _iso(ms: int) -> str:
    return times.utc(ms).isoformat(sep=" ", timespec="milliseconds")


CASSETTE_SUFFIXES = (".yaml", ".yml", ".json")
SOURCE_SUFFIXES = (*CASSETTE_SUFFIXES, ".csv", ".zip")


def expand(paths: list[Path]) -> list[Path]:
    """A directory stands for the cassettes and archives directly inside it, in name order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SOURCE_SUFFIXES and p.is_file())
            if not found:
                raise InputError(f"{path}: a directory with no cassettes (.yaml) or archives (.csv, .zip) in it")
            out.extend(found)
        else:
            out.append(path)
    return out


def open_sources(paths: list[Path], counters: Counters, lag_ms: int, notes: list[str] | None = None,
                 ) -> tuple[list[list[Item] | Iterator[Item]], dict[str, int]]:
    """Validate every source before anything is published; returns the item sources and, per symbol, the lowest
    agg id they hold (to tell a forward replay from one that overlaps what Kafka has). ``notes`` receives a line
    per archive that vouches for less than its name says (``unverified_note``)."""
    sources: list[list[Item] | Iterator[Item]] = []
    lowest: dict[str, int] = {}

    def note(trade: Trade) -> None:
        lowest[trade.symbol] = min(lowest.get(trade.symbol, trade.agg_id), trade.agg_id)

    for path in expand(paths):
        if path.suffix in CASSETTE_SUFFIXES:
            items = cassette_items(path, counters, lag_ms)
            for item in items:
                if isinstance(item, Trade):
                    note(item)
            sources.append(items)
        else:
            archive = Archive.open(path)  # a checksum that does not match fails here
            rows, beats = 0, []
            for item in archive.items():  # a full pass: a malformed row fails before anything is published
                if isinstance(item, Heartbeat):
                    beats.append(item)
                else:
                    note(item)
                    rows += 1
            unverified = unverified_note(archive, beats)
            log.info("%s: %d rows; %s", path.name, rows, unverified or "verified by its checksum: its whole period")
            if unverified and notes is not None:
                notes.append(unverified)
            sources.append(archive.items())
    return sources, lowest


def already_published(bootstrap: str, topic: str, lowest: dict[str, int],
                      options: kafka_io.Options = None) -> dict[str, list[tuple[int, int]]]:
    """Per symbol, the agg-id ranges of the sources that the topic already holds.

    A forward replay (every source id above the newest in the topic) needs only the newest ids, found by a short
    backward scan; a replay that overlaps or precedes them gets an exact scan, so it skips precisely the trades
    already there and publishes the rest (an older archive replayed after a newer one is not lost).
    """
    newest = kafka_io.last_agg_ids(bootstrap, topic, lowest, options=options)
    overlapping = [symbol for symbol, low in lowest.items() if symbol in newest and low <= newest[symbol]]
    return kafka_io.published_ranges(bootstrap, topic, overlapping, options=options) if overlapping else {}


def publish_items(sink: kafka_io.TradeSink, published: dict[str, list[tuple[int, int]]], items: Iterable[Item],
                  counters: Counters, *, speed: float | None, stop: Callable[[], bool],
                  progress: Progress | None = None) -> None:
    """Publish what ``open_sources`` validated into ``sink`` at ``speed`` (None: as fast as Kafka takes it),
    skipping the ``published`` ranges (``already_published``); closes the sink."""
    try:
        publish(items, sink, Sequencer(published=published), counters, pacer=Pacer(speed), progress=progress,
                stop=stop)
    finally:
        sink.close()
