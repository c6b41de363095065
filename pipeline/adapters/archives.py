"""Binance public-data aggTrades archives: ``<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv`` or ``.zip`` (daily), or
``<SYMBOL>-aggTrades-<YYYY-MM>.csv``/``.zip`` (monthly). The symbol and the period come from the file name; the
period tells until when the file is complete (the end of that day or month).
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import io
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.trades import MalformedTrade, Trade, is_header, parse_archive_row
from pipeline.errors import InputError

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]{2,20})-aggTrades-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?$")


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
            start_ms = int(first.timestamp() * 1000)
        except ValueError as exc:
            raise InputError(f"{path.name}: the date in the name is not a real date") from exc
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
        """Every record in file order; a malformed row raises ``InputError`` naming the file and line."""
        for line_no, row in enumerate(csv.reader(self._lines()), start=1):
            if not row or (line_no == 1 and is_header(row)):
                continue
            try:
                yield parse_archive_row(self.symbol, row)
            except MalformedTrade as exc:
                raise InputError(f"{self.path.name} line {line_no}: {exc}") from exc
