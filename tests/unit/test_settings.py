import pytest

from pipeline.errors import ConfigError
from pipeline.settings import DEFAULT_SYMBOLS, MysqlUrl, Settings


def test_defaults_and_parsing() -> None:
    s = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://u:s%40cret@db:3307/prod",
                               "PIPELINE_SYMBOLS": "btcusdt, ethusdt", "PIPELINE_WATERMARK_SECONDS": "5"})
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.mysql_url == MysqlUrl("u", "s@cret", "db", 3307, "prod")
    assert s.watermark_seconds == 5
    assert Settings.from_mapping({}).symbols == DEFAULT_SYMBOLS


def test_secrets_never_show() -> None:
    s = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://u:hunter2@db/prod"})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.mysql_url)
    assert s.mysql_url is not None and "hunter2" in s.mysql_url.render()


@pytest.mark.parametrize("env", [
    {"PIPELINE_MYSQL_URL": "postgres://u:p@h/db"}, {"PIPELINE_MYSQL_URL": "mysql://h/db"},
    {"PIPELINE_SYMBOLS": "BTC-USDT"}, {"PIPELINE_SYMBOLS": " , "}, {"PIPELINE_WATERMARK_SECONDS": "ten"},
    {"PIPELINE_TOPIC": "bad topic"},
])
def test_bad_settings_fail_at_construction(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_mapping(env)
