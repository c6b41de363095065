from pathlib import Path

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


def test_default_checkpoint_lives_with_the_local_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from pipeline.services import stack

    settings = Settings.from_mapping({"PIPELINE_STATE_DIR": str(tmp_path)})
    assert stack.checkpoint_dir(settings) == tmp_path / "checkpoint"  # no stack: beside the state
    (tmp_path / "stack.json").write_text(json.dumps({"backend": "processes", "run_dir": str(tmp_path / "run"),
                                                     "bootstrap": "127.0.0.1:1", "url": "mysql://u:p@h:1/db"}))
    assert stack.checkpoint_dir(settings) == tmp_path / "run" / "checkpoint"  # deleted with the stack's data
    explicit = Settings.from_mapping({"PIPELINE_STATE_DIR": str(tmp_path), "PIPELINE_CHECKPOINT_DIR": "/x/y"})
    assert stack.checkpoint_dir(explicit) == Path("/x/y")


def test_provisioning_names_the_debian_packages_for_what_is_missing() -> None:
    from pipeline.services.provision import missing_packages

    assert missing_packages(lambda name: True) == []
    assert missing_packages(lambda name: name in ("java", "mvn")) == ["mariadb-server"]
    assert missing_packages(lambda name: name == "mysqld") == ["openjdk-17-jre-headless", "maven"]
