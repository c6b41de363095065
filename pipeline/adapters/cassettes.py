"""Recorded Binance traffic (vcrpy cassettes): record live answers, or play them back with no network at all.

Playback uses record mode ``none`` (a request that was not recorded fails instead of reaching the network) and
plays repeated identical requests in the order they were recorded, so a poller that asks ``fromId=N`` twice gets
first the empty page, then the one that had new trades, exactly as it happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from pipeline.errors import InputError

__all__ = ["CannotOverwriteExistingCassetteException", "playback", "recording"]


def _vcr(record_mode: str) -> vcr.VCR:
    return vcr.VCR(
        record_mode=record_mode,
        match_on=["method", "uri"],  # the full URI: scheme, host, port, path and query
        decode_compressed_response=True,
        filter_headers=["User-Agent", "X-MBX-APIKEY"],
    )


@contextmanager
def playback(path: Path) -> Iterator[None]:
    if not path.exists():
        raise InputError(f"{path}: no such cassette")
    with ExitStack() as stack:
        try:
            stack.enter_context(_vcr("none").use_cassette(str(path), allow_playback_repeats=False))
        except Exception as exc:  # noqa: BLE001 - vcrpy/yaml raise many kinds for a file that is not a cassette
            raise InputError(f"{path}: not a readable vcrpy cassette ({type(exc).__name__}: {exc})") from exc
        yield


@contextmanager
def recording(path: Path) -> Iterator[None]:
    if path.exists():
        raise InputError(f"{path} exists already; choose a new --out path")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _vcr("all").use_cassette(str(path)):
        yield
