"""The archive reader accepts Binance spot aggTrades archives only (no header, 7 or 8 columns); anything with a
header, in particular a USD-M futures archive of the same name, is refused before a single trade is read. And a
file vouches only for what it proves it holds: its whole period when Binance's checksum matches, else the times
strictly inside its runs of consecutive agg ids; a checksum that does not match refuses it."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from pipeline import replay
from pipeline.adapters.archives import Archive
from pipeline.core import times
from pipeline.core.counters import Counters
from pipeline.core.messages import Heartbeat
from pipeline.core.trades import Trade
from pipeline.errors import InputError
from tests.archive_builder import FUTURES_HEADER, synthetic_trades, write_archive, write_checksum

DAY, START = "2025-01-01", 1_735_689_600_000


def read(path: Path) -> list[object]:
    return list(Archive.open(path).trades())


@pytest.mark.parametrize("zipped", [False, True])
def test_a_usd_m_futures_archive_is_refused_with_one_clear_line(tmp_path: Path, zipped: bool) -> None:
    trades = synthetic_trades("BTCUSDT", START, 20, seed=1)
    path = write_archive(tmp_path, "BTCUSDT", DAY, trades, futures=True, zipped=zipped)
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.name} line 1: this looks like a USD-M futures archive (header row ")
    assert FUTURES_HEADER in message and message.endswith("only spot aggTrades archives are accepted")


def test_nothing_is_yielded_before_the_refusal(tmp_path: Path) -> None:
    path = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 5, seed=2), futures=True)
    trades = Archive.open(path).trades()
    with pytest.raises(InputError):
        next(trades)


@pytest.mark.parametrize("header", [
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match",
    "AGG_TRADE_ID, PRICE, QUANTITY, FIRST_TRADE_ID, LAST_TRADE_ID, TRANSACT_TIME, IS_BUYER_MAKER",
    "a,p,q,f,l,T,m,M",
    "tradeId,price,qty,firstTradeId,lastTradeId,timestamp,isBuyerMaker,isBestMatch",
])
def test_any_header_row_is_refused_not_skipped(tmp_path: Path, header: str) -> None:
    path = write_archive(tmp_path, "ETHUSDT", DAY, synthetic_trades("ETHUSDT", START, 5, seed=3))
    path.write_text("\n" + header + "\n" + path.read_text())  # after a blank line, too
    with pytest.raises(InputError, match=r"line 2: .*header row .*only spot aggTrades archives are accepted"):
        read(path)


def test_headerless_spot_archives_read_and_7_columns_are_a_futures_archive(tmp_path: Path) -> None:
    trades = synthetic_trades("SOLUSDT", START, 50, seed=4)
    path = write_archive(tmp_path, "SOLUSDT", DAY, trades)
    assert read(path) == trades
    (tmp_path / "seven").mkdir()
    seven = tmp_path / "seven" / path.name  # an older USD-M futures file: no header, no best-match column
    seven.write_text("".join(",".join(line.split(",")[:7]) + "\n" for line in path.read_text().splitlines()))
    with pytest.raises(InputError, match="7 is a USD-M futures archive"):
        read(seven)


def test_a_malformed_first_data_row_is_named_as_such_not_as_a_header(tmp_path: Path) -> None:
    path = write_archive(tmp_path, "BNBUSDT", DAY, synthetic_trades("BNBUSDT", START, 3, seed=5))
    path.write_text("x" + path.read_text())
    with pytest.raises(InputError, match=r"line 1: agg id 'x\d+' is not an integer") as info:
        read(path)
    assert "header" not in str(info.value)


# What a file vouches for: its whole period only when Binance's checksum proves it complete; otherwise the times
# strictly inside each run of consecutive agg ids (a truncated download keeps the day's name).

DAY_MS = 86_400_000


def same_ms_pairs(trades: list[Trade], every: int = 7) -> list[Trade]:
    """``trades`` with every ``every``-th one moved to its predecessor's millisecond (real days have many)."""
    out = list(trades)
    for i in range(every, len(out), every):
        out[i] = dataclasses.replace(out[i], event_time_ms=out[i - 1].event_time_ms)
    return out


def beats_of(path: Path) -> tuple[list[Trade], list[Heartbeat]]:
    items = list(Archive.open(path).items())
    return [i for i in items if isinstance(i, Trade)], [i for i in items if isinstance(i, Heartbeat)]


def vouched_times(beats: list[Heartbeat], trades: list[Trade]) -> set[int]:
    """The times of ``trades`` some heartbeat vouches for."""
    return {t.event_time_ms for t in trades for b in beats if b.covered_from_ms <= t.event_time_ms <
            b.complete_before_ms}


def test_a_zip_verified_by_its_checksum_vouches_for_its_whole_day(tmp_path: Path) -> None:
    trades = synthetic_trades("BTCUSDT", START + 3_600_000, 200, seed=10)
    path = write_archive(tmp_path, "BTCUSDT", DAY, trades, zipped=True, checksum=True)
    archive = Archive.open(path)
    assert archive.verified
    assert list(archive.items()) == [*trades, Heartbeat("BTCUSDT", START, START + DAY_MS)]  # the heartbeat last


@pytest.mark.parametrize("zipped", [False, True])
def test_without_a_checksum_a_file_vouches_only_for_the_times_strictly_inside_its_trades(
        tmp_path: Path, zipped: bool) -> None:
    trades = synthetic_trades("ETHUSDT", START + 3_600_000, 200, seed=11)
    path = write_archive(tmp_path, "ETHUSDT", DAY, trades, zipped=zipped)
    archive = Archive.open(path)
    assert not archive.verified
    first, last = trades[0].event_time_ms, trades[-1].event_time_ms
    assert list(archive.items()) == [*trades, Heartbeat("ETHUSDT", first + 1, last)]


@pytest.mark.parametrize("zipped", [False, True])
def test_a_cut_anywhere_even_inside_a_millisecond_never_vouches_for_a_missing_trade(
        tmp_path: Path, zipped: bool) -> None:
    """The whole day is the oracle: whatever stretch of it a file holds (the newer half of a split, a truncated
    download, cut between two trades of one millisecond), no time the file vouches for has a trade it lacks."""
    day = same_ms_pairs(synthetic_trades("SOLUSDT", START, 300, seed=12, spacing_ms=200))
    cuts = [(0, 150), (150, 300), (7, 300), (0, 14), (70, 71), (70, 72), (69, 76), (1, 299)]
    assert any(day[i - 1].event_time_ms == day[i].event_time_ms for i, _ in cuts if i)  # some cut inside a ms
    for start, end in cuts:
        directory = tmp_path / f"{start}-{end}"
        directory.mkdir()
        held, beats = beats_of(write_archive(directory, "SOLUSDT", DAY, day[start:end], zipped=zipped))
        assert held == day[start:end]
        missing = day[:start] + day[end:]
        assert not vouched_times(beats, missing), (start, end, beats)
        inside = {t.event_time_ms for t in held if held[0].event_time_ms < t.event_time_ms < held[-1].event_time_ms}
        assert vouched_times(beats, held) == inside  # and everything strictly inside is vouched for


def test_a_gap_in_agg_ids_splits_what_an_unverified_file_vouches_for(tmp_path: Path) -> None:
    trades = synthetic_trades("ADAUSDT", START, 100, seed=13)
    held = trades[:40] + trades[45:]  # ids 41..45 missing
    _, beats = beats_of(write_archive(tmp_path, "ADAUSDT", DAY, held))
    assert beats == [Heartbeat("ADAUSDT", trades[0].event_time_ms + 1, trades[39].event_time_ms),
                     Heartbeat("ADAUSDT", trades[45].event_time_ms + 1, trades[99].event_time_ms)]
    assert not vouched_times(beats, trades[40:45])


def test_a_file_of_one_millisecond_vouches_for_nothing(tmp_path: Path) -> None:
    one = synthetic_trades("BNBUSDT", START, 3, seed=14)
    one = [dataclasses.replace(t, event_time_ms=one[0].event_time_ms) for t in one]
    assert beats_of(write_archive(tmp_path, "BNBUSDT", DAY, one)) == (one, [])
    (tmp_path / "empty").mkdir()
    assert beats_of(write_archive(tmp_path / "empty", "BNBUSDT", DAY, [])) == ([], [])


@pytest.mark.parametrize("checksum", [False, True])
def test_monthly_archives_vouch_for_their_whole_month_only_when_verified(tmp_path: Path, checksum: bool) -> None:
    feb = 1_738_368_000_000  # 2025-02-01
    trades = synthetic_trades("XRPETH", feb + 5 * DAY_MS, 300, seed=15, spacing_ms=600_000)
    path = write_archive(tmp_path, "XRPETH", "2025-02", trades, zipped=True, checksum=checksum)
    held, beats = beats_of(path)
    assert held == trades
    whole = Heartbeat("XRPETH", feb, feb + 28 * DAY_MS)
    assert beats == ([whole] if checksum else
                     [Heartbeat("XRPETH", trades[0].event_time_ms + 1, trades[-1].event_time_ms)])


def test_a_checksum_that_does_not_match_refuses_the_file_before_a_trade_is_read(tmp_path: Path) -> None:
    trades = synthetic_trades("BTCUSDT", START, 50, seed=16)
    path = write_archive(tmp_path, "BTCUSDT", DAY, trades, zipped=True, checksum=True)
    with zipfile.ZipFile(path, "a") as zf:  # changed after Binance computed its checksum
        zf.writestr("extra.txt", "x")
    with pytest.raises(InputError) as info:
        Archive.open(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.name}: SHA-256 ") and "does not match its " in message
    assert message.endswith("the file is damaged or incomplete; download it again")


def test_a_truncated_download_beside_its_checksum_is_refused_not_trusted_less(tmp_path: Path) -> None:
    path = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 50, seed=17), zipped=True,
                         checksum=True)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="does not match its BTCUSDT-aggTrades-2025-01-01.zip.CHECKSUM"):
        Archive.open(path)


@pytest.mark.parametrize(("text", "error"), [
    ("", "not a checksum file"),
    ("deadbeef  BTCUSDT-aggTrades-2025-01-01.zip\n", "not a checksum file"),
    ("{0}  BTCUSDT-aggTrades-2025-01-01.zip\n{0}  BTCUSDT-aggTrades-2025-01-01.zip\n", "not a checksum file"),
    ("{0}  ETHUSDT-aggTrades-2025-01-01.zip\n", "it is the checksum of 'ETHUSDT-aggTrades-2025-01-01.zip', not of"),
])
def test_a_checksum_file_that_is_not_this_zips_is_refused(tmp_path: Path, text: str, error: str) -> None:
    path = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 5, seed=18), zipped=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / f"{path.name}.CHECKSUM").write_text(text.format(digest))
    with pytest.raises(InputError, match=re.escape(error)):
        Archive.open(path)


def test_sha256sums_binary_marker_and_a_directory_in_the_name_are_accepted(tmp_path: Path) -> None:
    path = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 5, seed=19), zipped=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest().upper()
    (tmp_path / f"{path.name}.CHECKSUM").write_text(f"{digest} *data/spot/daily/{path.name}\r\n")
    assert Archive.open(path).verified


def test_a_csv_is_never_verified_whatever_lies_beside_it(tmp_path: Path) -> None:
    """Binance checksums its zips only: a .csv (extracted, or anyone's export) cannot prove it is a whole day."""
    trades = synthetic_trades("ETHUSDT", START, 20, seed=20)
    path = write_archive(tmp_path, "ETHUSDT", DAY, trades)
    write_checksum(path)  # a checksum of this very .csv, made by whoever made the file
    zipped = write_archive(tmp_path, "ETHUSDT", DAY, trades, zipped=True, checksum=True)  # and the verified zip
    assert Archive.open(zipped).verified and not Archive.open(path).verified
    assert beats_of(path)[1] == [Heartbeat("ETHUSDT", trades[0].event_time_ms + 1, trades[-1].event_time_ms)]


def test_a_bad_checksum_stops_every_source_before_any_is_returned_for_publishing(tmp_path: Path) -> None:
    good = write_archive(tmp_path, "ETHUSDT", DAY, synthetic_trades("ETHUSDT", START, 20, seed=21))
    bad = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 20, seed=22), zipped=True)
    write_checksum(bad, "0" * 64)
    with pytest.raises(InputError, match="BTCUSDT-aggTrades-2025-01-01.zip: SHA-256 .* does not match"):
        replay.open_sources([good, bad], Counters(), 0)


def test_replay_names_each_file_that_vouches_for_less_than_its_name(tmp_path: Path) -> None:
    trades = synthetic_trades("ETHUSDT", START + 8 * 60_000, 20, seed=23, spacing_ms=1_000)
    csv_path = write_archive(tmp_path, "ETHUSDT", DAY, trades)
    bare_zip = write_archive(tmp_path, "SOLUSDT", DAY, synthetic_trades("SOLUSDT", START, 20, seed=24), zipped=True)
    verified_zip = write_archive(tmp_path, "BTCUSDT", DAY, synthetic_trades("BTCUSDT", START, 20, seed=25),
                                 zipped=True, checksum=True)
    notes: list[str] = []
    sources, lowest = replay.open_sources([csv_path, bare_zip, verified_zip], Counters(), 0, notes)
    assert lowest == {"ETHUSDT": 1, "SOLUSDT": 1, "BTCUSDT": 1} and len(sources) == 3
    first = times.utc(trades[0].event_time_ms + 1).isoformat(sep=" ", timespec="milliseconds")
    assert notes[0].startswith(f"{csv_path.name} is not verified complete (a .csv, and Binance checksums only its "
                               f".zip): it vouches only for {first} to ")
    assert notes[1].startswith(f"{bare_zip.name} is not verified complete (no {bare_zip.name}.CHECKSUM beside it)")
    assert len(notes) == 2  # the verified zip vouches for its whole day
