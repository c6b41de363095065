"""The archive reader accepts Binance spot aggTrades archives only (no header, 7 or 8 columns); anything with a
header, in particular a USD-M futures archive of the same name, is refused before a single trade is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters.archives import Archive
from pipeline.errors import InputError
from tests.archive_builder import FUTURES_HEADER, synthetic_trades, write_archive

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
