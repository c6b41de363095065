"""Binance public-data aggTrades archives: ``<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv`` or ``.zip`` (daily), or
``<SYMBOL>-aggTrades-<YYYY-MM>.csv``/``.zip`` (monthly). The symbol and the period come from the file name.

A file vouches (by the coverage heartbeats it ends with) only for what it proves it holds::

    .zip with Binance's <name>.zip.CHECKSUM beside it, matching   its whole period (the day or month of its name)
    .zip with a CHECKSUM that does not match                      refused (InputError) before anything is published
    .zip without a CHECKSUM, or any .csv                          the times strictly inside each run of consecutive
                                                                  agg ids: (first trade's T, last trade's T)

A name alone proves nothing: a truncated download, or a day split in two, keeps it. Binance publishes checksums of
its zips only, so an extracted .csv can never prove it is a whole day.

Spot archives only: they have no header. A file that starts with one (a USD-M futures archive has the same names,
a header and 7 columns) is refused as a whole, before anything is published.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import hashlib
import io
import re
import time
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core import times
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import MIN_TIME_MS, MalformedTrade, Trade, is_symbol, parse_archive_row
from pipeline.errors import InputError

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]{2,20})-aggTrades-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?$")
# USD-M futures aggTrades archives (data.binance.vision/data/futures/um/...) share the file names, but start with
# this header row and have no best-match column. Spot archives have no header at all.
FUTURES_HEADER = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                  "is_buyer_maker")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d*)?\s*$")
CHECKSUM_SUFFIX = ".CHECKSUM"  # Binance's <name>.zip.CHECKSUM: one line "<sha256 hex>  <name>.zip" (sha256sum's)
_CHECKSUM_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")


def header_refusal(row: list[str]) -> str | None:
    """Why a file whose first row is a header (no field is a number) is refused; ``None`` for a data row.

    Spot aggTrades archives never carry a header, so a header means another kind of file: a USD-M futures archive
    (same names, 7 columns, agg ids of another market that collide with the spot ones), or some other export.
    Skipping the header, as this reader once did, let futures trades land in the spot windows."""
    if any(_NUMBER.match(cell) for cell in row):
        return None
    shown = ",".join(row)[:120]
    if tuple(cell.strip().lower() for cell in row) == FUTURES_HEADER or "transact_time" in shown.lower():
        return (f"this looks like a USD-M futures archive (header row {shown!r}); only spot aggTrades archives "
                "are accepted")
    return (f"a header row ({shown!r}), which spot aggTrades archives do not have; only spot aggTrades archives "
            "are accepted")


def checksum_verified(path: Path) -> bool:
    """Whether ``path`` is proved complete: a .zip whose Binance checksum (``<name>.zip.CHECKSUM`` beside it) matches.
    False when there is none, or for a .csv (Binance checksums its zips only). A checksum file that does not match,
    names another file or is not one is an ``InputError``: a damaged file is refused, never quietly trusted less."""
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    if path.suffix != ".zip" or not checksum.exists():
        return False
    try:
        lines = [line.strip() for line in checksum.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{checksum}: unreadable checksum file ({type(exc).__name__}: {exc})") from exc
    match = _CHECKSUM_LINE.match(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise InputError(f"{checksum.name}: not a checksum file (expected one line \"<sha256>  {path.name}\")")
    if Path(match["name"]).name != path.name:
        raise InputError(f"{checksum.name}: it is the checksum of {match['name']!r}, not of {path.name}")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: unreadable archive ({type(exc).__name__}: {exc})") from exc
    if digest.hexdigest() != match["digest"].lower():
        raise InputError(f"{path.name}: SHA-256 {digest.hexdigest()} does not match its {checksum.name} "
                         f"({match['digest'].lower()}): the file is damaged or incomplete; download it again")
    return True


def proven(trades: Iterable[Trade]) -> Iterator[Trade | Heartbeat]:
    """``trades`` (one symbol's, ids rising) with, after each run of consecutive agg ids, a heartbeat for what the
    run proves: the times strictly between its first and its last trade::

        agg ids    17  18  19  20      24  25  26        (21..23 missing)
        times      t0 ...      t1      t2 ...  t3
        vouched      [t0 + 1, t1)        [t2 + 1, t3)

    Consecutive ids prove that no trade is missing between two of them (ids rise with time). Not t0 itself: the
    trade before 17 may share its millisecond; nor t1: the trade after 20 may. And nothing before t0 or after t3:
    a file cut short looks exactly like a quiet stretch."""
    run: tuple[Trade, Trade] | None = None  # the current run's first and last trade
    for trade in trades:
        if run is not None and trade.agg_id != run[1].agg_id + 1:  # a gap ends the run
            yield from _inside(*run)
            run = None
        run = (run[0] if run else trade, trade)
        yield trade
    if run is not None:
        yield from _inside(*run)


def _inside(first: Trade, last: Trade) -> Iterator[Heartbeat]:
    if last.event_time_ms - first.event_time_ms > 1:
        yield Heartbeat(first.symbol, first.event_time_ms + 1, last.event_time_ms)


@dataclasses.dataclass(frozen=True)
class Archive:
    path: Path
    symbol: str
    covered_from_ms: int  # the start of the day (or month) the name says: every trade must lie in it
    complete_before_ms: int  # its end
    verified: bool = False  # proved complete by its checksum: vouches for that whole period

    def items(self) -> Iterator[Trade | Heartbeat]:
        """The trades in file order, and the coverage heartbeats of what the file proves (see the module)."""
        if not self.verified:
            yield from proven(self.trades())
            return
        yield from self.trades()
        yield Heartbeat(self.symbol, self.covered_from_ms, self.complete_before_ms)

    @classmethod
    def open(cls, path: Path) -> Archive:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.suffix not in (".csv", ".zip"):
            raise InputError(f"{path}: expected a .csv or .zip aggTrades archive (or a .yaml cassette)")
        match = _NAME.match(path.stem)
        if not match:
            raise InputError(f"{path.name}: cannot tell the symbol and day from the name; Binance names archives "
                             "<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv (or .zip)")
        year, month = int(match["year"]), int(match["month"])
        try:
            first = datetime(year, month, int(match["day"] or 1), tzinfo=UTC)
            days = 1 if match["day"] else calendar.monthrange(year, month)[1]
            start_ms = times.ms(first)
        except ValueError as exc:
            raise InputError(f"{path.name}: the date in the name is not a real date") from exc
        if not is_symbol(match["symbol"]):
            raise InputError(f"{path.name}: {match['symbol']!r} is not a symbol (2 to 20 of A-Z, 0-9, a letter)")
        if start_ms < MIN_TIME_MS:
            raise InputError(f"{path.name}: Binance has no trades before 2017")
        if start_ms + days * 86_400_000 > time.time() * 1000:
            raise InputError(f"{path.name}: its period has not ended yet, so the file cannot hold all of it")
        return cls(path=path, symbol=match["symbol"], covered_from_ms=start_ms,
                   complete_before_ms=start_ms + days * 86_400_000, verified=checksum_verified(path))

    def _lines(self) -> Iterator[str]:
        try:
            if self.path.suffix == ".zip":
                with zipfile.ZipFile(self.path) as zf:
                    members = [n for n in zf.namelist() if n.endswith(".csv")]
                    if len(members) != 1:
                        raise InputError(f"{self.path}: expected one .csv inside the zip, found {len(members)}")
                    with zf.open(members[0]) as raw:
                        yield from io.TextIOWrapper(raw, encoding="ascii", newline="")
            else:
                with open(self.path, encoding="ascii", newline="") as fh:
                    yield from fh
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as exc:
            raise InputError(f"{self.path}: unreadable archive ({type(exc).__name__}: {exc})") from exc

    def trades(self) -> Iterator[Trade]:
        """Every record in file order; a malformed row raises ``InputError`` naming the file and line, and so does
        a row outside the period the name says or out of order: a verified file vouches for that period, and an
        unverified one for its runs of consecutive ids, which only rising ids and times make true."""
        previous: Trade | None = None
        line_no = 0
        try:
            for line_no, row in enumerate(csv.reader(self._lines()), start=1):
                if not row:
                    continue
                if previous is None and (refusal := header_refusal(row)):  # the first row that is not blank
                    raise InputError(f"{self.path.name} line {line_no}: {refusal}")
                trade = self._row(line_no, row, previous)
                previous = trade
                yield trade
        except csv.Error as exc:  # a field over csv's limit (128 KiB), a NUL byte...
            raise InputError(f"{self.path.name} line {line_no + 1}: not a CSV row ({exc})") from exc

    def _row(self, line_no: int, row: list[str], previous: Trade | None) -> Trade:
        try:
            trade = parse_archive_row(self.symbol, row)
        except MalformedTrade as exc:
            raise InputError(f"{self.path.name} line {line_no}: {exc}") from exc
        if not self.covered_from_ms <= trade.event_time_ms < self.complete_before_ms:
            raise InputError(f"{self.path.name} line {line_no}: time {trade.event_time_ms} is outside the period "
                             "the file name says")
        if previous is not None and (trade.agg_id <= previous.agg_id or trade.event_time_ms < previous.event_time_ms):
            raise InputError(f"{self.path.name} line {line_no}: agg id or time goes backwards")
        return trade
