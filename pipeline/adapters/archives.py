"""Binance public-data aggTrades archives: ``<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv`` or ``.zip`` (daily), or
``<SYMBOL>-aggTrades-<YYYY-MM>.csv``/``.zip`` (monthly). The symbol and the period come from the file name; the
period tells until when the file is complete (the end of that day or month).

Spot archives only: they have no header. A file that starts with one (a USD-M futures archive has the same names,
a header and 7 columns) is refused as a whole, before anything is published.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import io
import re
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core import times
from pipeline.core.trades import MIN_TIME_MS, MalformedTrade, Trade, is_symbol, parse_archive_row
from pipeline.errors import InputError

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]{2,20})-aggTrades-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?$")
# USD-M futures aggTrades archives (data.binance.vision/data/futures/um/...) share the file names, but start with
# this header row and have no best-match column. Spot archives have no header at all.
FUTURES_HEADER = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                  "is_buyer_maker")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d*)?\s*$")


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


@dataclasses.dataclass(frozen=True)
class Archive:
    path: Path
    symbol: str
    covered_from_ms: int  # the start of the day (or month) the file covers
    complete_before_ms: int  # its end

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
                   complete_before_ms=start_ms + days * 86_400_000)

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
        a row outside the period the name says or out of order: the period becomes a coverage claim (every trade
        of it is here), so the file must hold that period and nothing else."""
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
