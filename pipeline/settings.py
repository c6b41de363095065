"""Settings: one frozen object, built from an explicit mapping (``os.environ`` in production, a dict in tests).

Each field names the environment variable it comes from. Validation happens at construction, so a bad value fails
before anything connects. Secrets (the MySQL password) never appear in ``repr`` or ``str``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from pipeline.errors import ConfigError

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclasses.dataclass(frozen=True)
class MysqlUrl:
    """``mysql://user:password@host:port/database``; the password is kept out of ``repr``."""

    user: str
    password: str = dataclasses.field(repr=False)
    host: str
    port: int
    database: str

    @classmethod
    def parse(cls, url: str) -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            raise ConfigError("PIPELINE_MYSQL_URL must look like mysql://user:password@host:port/database")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise ConfigError("PIPELINE_MYSQL_URL has an invalid port") from exc
        database = parts.path.lstrip("/")
        if not parts.hostname or not parts.username or not _DB_NAME_RE.match(database):
            raise ConfigError(
                "PIPELINE_MYSQL_URL must name a user, a host and a database: mysql://user:password@host:port/database"
            )
        return cls(
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            host=parts.hostname,
            port=port,
            database=database,
        )

    def with_database(self, database: str) -> MysqlUrl:
        return dataclasses.replace(self, database=database)

    def render(self) -> str:
        """The full URL including the password: for ``stack env`` output only, never for logs."""
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )

    def __str__(self) -> str:
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{self.database}"


def _symbols(raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ConfigError("PIPELINE_SYMBOLS is empty")
    for s in symbols:
        if not _SYMBOL_RE.match(s):
            raise ConfigError(f"PIPELINE_SYMBOLS: {s!r} is not a valid Binance symbol")
    return symbols


@dataclasses.dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str | None  # PIPELINE_KAFKA_BOOTSTRAP
    mysql_url: MysqlUrl | None  # PIPELINE_MYSQL_URL
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS  # PIPELINE_SYMBOLS
    topic: str = "binance.aggtrades"  # PIPELINE_TOPIC
    # PIPELINE_CHECKPOINT_DIR; None: beside the local stack's data (see pipeline.services.stack.checkpoint_dir)
    checkpoint_dir: Path | None = None
    watermark_seconds: int = 10  # PIPELINE_WATERMARK_SECONDS
    state_dir: Path = Path.home() / ".local/state/pipeline"  # PIPELINE_STATE_DIR: the local stack's state
    cache_dir: Path = Path.home() / ".cache/pipeline"  # PIPELINE_CACHE_DIR: Maven artifacts, outside the repo

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        state_dir = Path(get("PIPELINE_STATE_DIR") or cls.state_dir).expanduser()
        watermark_raw = get("PIPELINE_WATERMARK_SECONDS") or "10"
        try:
            watermark = int(watermark_raw)
        except ValueError as exc:
            raise ConfigError(f"PIPELINE_WATERMARK_SECONDS must be a whole number, got {watermark_raw!r}") from exc
        if not 0 <= watermark <= 3600:
            raise ConfigError("PIPELINE_WATERMARK_SECONDS must be between 0 and 3600")
        topic = get("PIPELINE_TOPIC") or cls.topic
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", topic):
            raise ConfigError(f"PIPELINE_TOPIC: {topic!r} is not a valid Kafka topic name")
        url = get("PIPELINE_MYSQL_URL")
        return cls(
            kafka_bootstrap=get("PIPELINE_KAFKA_BOOTSTRAP"),
            mysql_url=MysqlUrl.parse(url) if url else None,
            symbols=_symbols(get("PIPELINE_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)),
            topic=topic,
            checkpoint_dir=Path(checkpoint).expanduser() if (checkpoint := get("PIPELINE_CHECKPOINT_DIR")) else None,
            watermark_seconds=watermark,
            state_dir=state_dir,
            cache_dir=Path(get("PIPELINE_CACHE_DIR") or cls.cache_dir).expanduser(),
        )

    def with_connections(self, kafka_bootstrap: str, mysql_url: MysqlUrl) -> Settings:
        """Fill in the connections the environment left out (from the running local stack)."""
        return dataclasses.replace(
            self,
            kafka_bootstrap=self.kafka_bootstrap or kafka_bootstrap,
            mysql_url=self.mysql_url or mysql_url,
        )
