"""Settings: one frozen object, built from an explicit mapping (``os.environ`` in production, a dict in tests).

Each field names the environment variable it comes from. Validation happens at construction, so a bad value fails
before anything connects. Secrets (MySQL passwords, the Kafka SASL password, a key's password) never appear in
``repr`` or ``str``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.trades import is_symbol
from pipeline.errors import ConfigError
from pipeline.security import KafkaSecurity, MysqlUrl

SPARK_MASTERS = ("local", "spark://", "yarn", "k8s://")
SPARK_LOG_LEVELS = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE")
STACK_BACKENDS = ("processes", "containers")
# `pipeline process --trigger-seconds`: under load a small batch takes about 0.3 s here, so batches run back to back
# and a trade waits about one batch; idle, each trigger asks Kafka for new offsets (1 s: 2 % of a core, 0.1 s: 9 %;
# one 30 s sample of /proc ticks each, on an idle job here).
DEFAULT_TRIGGER_SECONDS = 0.25
MIN_BATCH_OFFSETS, MAX_BATCH_OFFSETS = 100, 100_000_000  # PIPELINE_MAX_OFFSETS_PER_TRIGGER's range
MAX_DRIVER_BATCH = 100_000  # PIPELINE_DRIVER_BATCH_MAX's largest: beyond it the driver's Python is slower than Spark
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT")
MAX_RETAIN_DAYS = 36_500  # PIPELINE_RETAIN_*_DAYS's largest (a century); 0 is "forever"

def _symbols(raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ConfigError("PIPELINE_SYMBOLS is empty")
    for s in symbols:
        if not is_symbol(s):
            raise ConfigError(f"PIPELINE_SYMBOLS: {s!r} is not a valid Binance symbol")
    return symbols


def _checkpoint(raw: str | None) -> Path | str | None:
    if raw is None:
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", raw):
        return raw.rstrip("/")
    return Path(raw).expanduser()


def max_offsets(raw: str, name: str) -> int:
    """A micro-batch's size limit (PIPELINE_MAX_OFFSETS_PER_TRIGGER, ``--max-offsets-per-trigger``)."""
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not MIN_BATCH_OFFSETS <= int(raw) <= MAX_BATCH_OFFSETS:
        raise ConfigError(f"{name} must be a whole number from {MIN_BATCH_OFFSETS:,} to {MAX_BATCH_OFFSETS:,}, "
                          f"got {raw!r}")
    return int(raw)


@dataclasses.dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str | None  # PIPELINE_KAFKA_BOOTSTRAP
    mysql_url: MysqlUrl | None  # PIPELINE_MYSQL_URL: the writer (SELECT, INSERT, UPDATE, DELETE)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS  # PIPELINE_SYMBOLS
    topic: str = "binance.aggtrades"  # PIPELINE_TOPIC
    # PIPELINE_TOPIC_PARTITIONS: partitions of the topic when the pipeline creates it (an existing topic is kept as
    # it is). A symbol lives in one partition, so more partitions than symbols add no parallelism to one job.
    topic_partitions: int = 3
    # PIPELINE_MAX_OFFSETS_PER_TRIGGER: at most this many Kafka messages in one micro-batch of `pipeline process`
    # (Spark's maxOffsetsPerTrigger). A batch's cost grows with its size only; lower it if a batch is too big for
    # the driver's memory or to commit sooner during a catch-up.
    max_offsets_per_trigger: int = 500_000
    # PIPELINE_DRIVER_BATCH_MAX: micro-batches of at most this many messages are computed in the driver by the
    # core's functions (no Spark shuffle: sub-second batches); larger ones by Spark. 0: every batch by Spark.
    driver_batch_max: int = 5_000
    # PIPELINE_CHECKPOINT_DIR: a local path, or a URL Spark's file systems read (hdfs://, s3a://, ...), kept as
    # written (a Path would fold "//"); None: beside the local stack's data (pipeline.services.stack.checkpoint_dir)
    checkpoint_dir: Path | str | None = None
    watermark_seconds: int = 10  # PIPELINE_WATERMARK_SECONDS
    state_dir: Path = Path.home() / ".local/state/pipeline"  # PIPELINE_STATE_DIR: the local stack's state
    cache_dir: Path = Path.home() / ".cache/pipeline"  # PIPELINE_CACHE_DIR: Maven artifacts, outside the repo
    # PIPELINE_MYSQL_ADMIN_URL: the schema owner, for `pipeline migrate` (None: the writer tries, see ensure_schema)
    mysql_admin_url: MysqlUrl | None = None
    mysql_read_url: MysqlUrl | None = None  # PIPELINE_MYSQL_READ_URL: read-only (None: the writer's URL)
    kafka_security: KafkaSecurity = KafkaSecurity()  # PIPELINE_KAFKA_SECURITY_PROTOCOL, ..._SASL_*, ..._SSL_*
    # PIPELINE_SPARK_MASTER: where the job runs when not started by spark-submit (None: local[2])
    spark_master: str | None = None
    spark_driver_memory: str = "1g"  # PIPELINE_SPARK_DRIVER_MEMORY (when the job starts its own JVM)
    spark_log_level: str = "WARN"  # PIPELINE_SPARK_LOG_LEVEL
    stack_backend: str | None = None  # PIPELINE_STACK_BACKEND: processes or containers (None: containers if Docker)
    # What `pipeline prune` keeps, in days (0: forever); docs/OPERATIONS_RUNBOOK.md, "Retention", says why each is safe.
    # PIPELINE_RETAIN_LEDGER_DAYS: pipeline_batches rows; the newest batches, and those the checkpoint may execute
    # again, are kept whatever their age.
    retain_ledger_days: int = 7
    # PIPELINE_RETAIN_QUARANTINE_DAYS: quarantine rows; a refused message read again is known by its row as kept
    # already, so keep them longer than Kafka keeps the topic's messages (its retention.ms).
    retain_quarantine_days: int = 90
    retain_repairs_days: int = 365  # PIPELINE_RETAIN_REPAIRS_DAYS: pipeline_repairs rows (what a repair replaced)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def url(name: str) -> MysqlUrl | None:
            raw = get(name)
            return MysqlUrl.parse(raw, name) if raw else None

        def days(name: str, default: int) -> int:
            return _bounded(get(name) or str(default), name, 0, MAX_RETAIN_DAYS)

        state_dir = Path(get("PIPELINE_STATE_DIR") or cls.state_dir).expanduser()
        watermark = _bounded(get("PIPELINE_WATERMARK_SECONDS") or "10", "PIPELINE_WATERMARK_SECONDS", 0, 3600)
        topic = _topic(get("PIPELINE_TOPIC") or cls.topic)
        partitions = _bounded(get("PIPELINE_TOPIC_PARTITIONS") or str(cls.topic_partitions),
                              "PIPELINE_TOPIC_PARTITIONS", 1, 10_000)
        batch_offsets = max_offsets(get("PIPELINE_MAX_OFFSETS_PER_TRIGGER") or str(cls.max_offsets_per_trigger),
                                    "PIPELINE_MAX_OFFSETS_PER_TRIGGER")
        driver_batch = _bounded(get("PIPELINE_DRIVER_BATCH_MAX") or str(cls.driver_batch_max),
                                "PIPELINE_DRIVER_BATCH_MAX", 0, MAX_DRIVER_BATCH)
        spark_master, driver_memory, log_level = _spark(
            get("PIPELINE_SPARK_MASTER"), get("PIPELINE_SPARK_DRIVER_MEMORY") or cls.spark_driver_memory,
            (get("PIPELINE_SPARK_LOG_LEVEL") or cls.spark_log_level).upper())
        backend = get("PIPELINE_STACK_BACKEND")
        if backend is not None and backend not in STACK_BACKENDS:
            raise ConfigError(f"PIPELINE_STACK_BACKEND must be one of {', '.join(STACK_BACKENDS)}, got {backend!r}")
        return cls(
            kafka_bootstrap=get("PIPELINE_KAFKA_BOOTSTRAP"),
            mysql_url=url("PIPELINE_MYSQL_URL"),
            symbols=_symbols(get("PIPELINE_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)),
            topic=topic,
            topic_partitions=partitions,
            max_offsets_per_trigger=batch_offsets,
            driver_batch_max=driver_batch,
            checkpoint_dir=_checkpoint(get("PIPELINE_CHECKPOINT_DIR")),
            watermark_seconds=watermark,
            state_dir=state_dir,
            cache_dir=Path(get("PIPELINE_CACHE_DIR") or cls.cache_dir).expanduser(),
            mysql_admin_url=url("PIPELINE_MYSQL_ADMIN_URL"),
            mysql_read_url=url("PIPELINE_MYSQL_READ_URL"),
            kafka_security=KafkaSecurity.from_mapping(env),
            spark_master=spark_master,
            spark_driver_memory=driver_memory,
            spark_log_level=log_level,
            stack_backend=backend,
            retain_ledger_days=days("PIPELINE_RETAIN_LEDGER_DAYS", cls.retain_ledger_days),
            retain_quarantine_days=days("PIPELINE_RETAIN_QUARANTINE_DAYS", cls.retain_quarantine_days),
            retain_repairs_days=days("PIPELINE_RETAIN_REPAIRS_DAYS", cls.retain_repairs_days),
        )

    def with_connections(self, kafka_bootstrap: str, mysql_url: MysqlUrl, mysql_admin_url: MysqlUrl | None = None,
                         mysql_read_url: MysqlUrl | None = None) -> Settings:
        """Fill in the connections the environment left out (from the running local stack).

        The stack's admin and read accounts are taken only together with its writer: accounts of one server."""
        if self.mysql_url is not None:
            return dataclasses.replace(self, kafka_bootstrap=self.kafka_bootstrap or kafka_bootstrap)
        return dataclasses.replace(
            self,
            kafka_bootstrap=self.kafka_bootstrap or kafka_bootstrap,
            mysql_url=mysql_url,
            mysql_admin_url=self.mysql_admin_url or mysql_admin_url,
            mysql_read_url=self.mysql_read_url or mysql_read_url,
        )

    def environment(self) -> dict[str, str]:
        """The ``PIPELINE_*`` variables that rebuild exactly these settings (``from_mapping``) in a child process.

        Passwords are included: for a child's environment only, never for output."""
        env = {"PIPELINE_SYMBOLS": ",".join(self.symbols), "PIPELINE_TOPIC": self.topic,
               "PIPELINE_TOPIC_PARTITIONS": str(self.topic_partitions),
               "PIPELINE_MAX_OFFSETS_PER_TRIGGER": str(self.max_offsets_per_trigger),
               "PIPELINE_DRIVER_BATCH_MAX": str(self.driver_batch_max),
               "PIPELINE_WATERMARK_SECONDS": str(self.watermark_seconds), "PIPELINE_STATE_DIR": str(self.state_dir),
               "PIPELINE_CACHE_DIR": str(self.cache_dir), "PIPELINE_SPARK_DRIVER_MEMORY": self.spark_driver_memory,
               "PIPELINE_SPARK_LOG_LEVEL": self.spark_log_level,
               "PIPELINE_RETAIN_LEDGER_DAYS": str(self.retain_ledger_days),
               "PIPELINE_RETAIN_QUARANTINE_DAYS": str(self.retain_quarantine_days),
               "PIPELINE_RETAIN_REPAIRS_DAYS": str(self.retain_repairs_days)}
        optional = {"PIPELINE_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "PIPELINE_CHECKPOINT_DIR": self.checkpoint_dir,
                    "PIPELINE_MYSQL_URL": self.mysql_url, "PIPELINE_MYSQL_ADMIN_URL": self.mysql_admin_url,
                    "PIPELINE_MYSQL_READ_URL": self.mysql_read_url, "PIPELINE_SPARK_MASTER": self.spark_master,
                    "PIPELINE_STACK_BACKEND": self.stack_backend}
        for name, value in optional.items():
            if value is not None:
                env[name] = value.render() if isinstance(value, MysqlUrl) else str(value)
        for field in dataclasses.fields(KafkaSecurity):
            value = getattr(self.kafka_security, field.name)
            if value is not None:
                env[f"PIPELINE_KAFKA_{field.name.upper()}"] = (
                    ("true" if value else "false") if isinstance(value, bool) else str(value))
        return env

    def child_environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """A child ``pipeline`` process's environment: ``inherited`` (PATH, JAVA_HOME, PYSPARK_SUBMIT_ARGS...) without
        any ``PIPELINE_*`` variable, then exactly these settings."""
        env = {k: v for k, v in inherited.items() if not k.startswith("PIPELINE_")}
        env.update(self.environment())
        return env

    def read_url(self) -> MysqlUrl | None:
        """The read-only account's URL: PIPELINE_MYSQL_READ_URL, or else the writer's."""
        return self.mysql_read_url or self.mysql_url

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for every kafka-python client (security settings only; empty by default)."""
        return self.kafka_security.client_options()

    def kafka_spark_options(self) -> dict[str, str]:
        """``kafka.*`` options for Spark's Kafka source (security settings only; empty by default)."""
        return self.kafka_security.spark_options()


def _bounded(raw: str, name: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``, or one clear line naming the variable."""
    if not re.fullmatch(r"[0-9]{1,9}", raw.strip()) or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low:,} to {high:,}, got {raw!r}")
    return int(raw)


def _topic(topic: str) -> str:
    if not re.match(r"^[A-Za-z0-9._-]{1,249}$", topic):
        raise ConfigError(f"PIPELINE_TOPIC: {topic!r} is not a valid Kafka topic name")
    return topic


def _spark(master: str | None, driver_memory: str, log_level: str) -> tuple[str | None, str, str]:
    """PIPELINE_SPARK_MASTER, _DRIVER_MEMORY and _LOG_LEVEL, checked."""
    if master and not master.startswith(SPARK_MASTERS):
        raise ConfigError(f"PIPELINE_SPARK_MASTER must be local[N], spark://HOST:PORT, yarn or k8s://..., "
                          f"got {master!r}")
    if not re.fullmatch(r"[0-9]{1,6}[kKmMgGtT]?", driver_memory):
        raise ConfigError(f"PIPELINE_SPARK_DRIVER_MEMORY must look like 1g or 512m, got {driver_memory!r}")
    if log_level not in SPARK_LOG_LEVELS:
        raise ConfigError(f"PIPELINE_SPARK_LOG_LEVEL must be one of {', '.join(SPARK_LOG_LEVELS)}, "
                          f"got {log_level!r}")
    return master, driver_memory, log_level
