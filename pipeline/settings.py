"""Settings: one frozen object, built from an explicit mapping (``os.environ`` in production, a dict in tests).

Each field names the environment variable it comes from. Validation happens at construction, so a bad value fails
before anything connects. Secrets (MySQL passwords, the Kafka SASL password, a key's password) never appear in
``repr`` or ``str``.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pipeline.core.trades import is_symbol
from pipeline.errors import ConfigError

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
_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# ?ssl-mode= in a MySQL URL, as the MySQL client's --ssl-mode: DISABLED (never TLS), REQUIRED (TLS, the server's
# certificate not checked), VERIFY_CA (TLS, certificate signed by ssl-ca or a system CA), VERIFY_IDENTITY (and it
# names the host). Absent: VERIFY_CA if ssl-ca is given, REQUIRED if only ssl-cert is, else the driver's default.
SSL_MODES = ("DISABLED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
_URL_PARAMETERS = {"ssl-mode": "ssl_mode", "ssl-ca": "ssl_ca", "ssl-cert": "ssl_cert", "ssl-key": "ssl_key"}


@dataclasses.dataclass(frozen=True)
class MysqlUrl:
    """``mysql://user:password@host:port/database[?ssl-mode=...&ssl-ca=...&ssl-cert=...&ssl-key=...]``; the password
    is kept out of ``repr`` and ``str``."""

    user: str
    password: str = dataclasses.field(repr=False)
    host: str
    port: int
    database: str
    ssl_mode: str | None = None  # ?ssl-mode=
    ssl_ca: str | None = None  # ?ssl-ca=: PEM file of the CA that signed the server's certificate
    ssl_cert: str | None = None  # ?ssl-cert=: PEM client certificate (and its key, unless ssl-key is given)
    ssl_key: str | None = None  # ?ssl-key=: PEM private key of the client certificate

    @classmethod
    def parse(cls, url: str, variable: str = "PIPELINE_MYSQL_URL") -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            raise ConfigError(f"{variable} must look like mysql://user:password@host:port/database")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise ConfigError(f"{variable} has an invalid port") from exc
        database = parts.path.lstrip("/")
        if not parts.hostname or not parts.username or not _DB_NAME_RE.match(database):
            raise ConfigError(
                f"{variable} must name a user, a host and a database: mysql://user:password@host:port/database"
            )
        return cls(
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            host=parts.hostname,
            port=port,
            database=database,
            **_url_parameters(parts.query, variable),
        )

    @property
    def tls_mode(self) -> str | None:
        """The effective ``ssl-mode`` (None: nothing asked, the driver's default)."""
        if self.ssl_mode:
            return self.ssl_mode
        if self.ssl_ca:
            return "VERIFY_CA"
        return "REQUIRED" if self.ssl_cert else None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context ``tls_mode`` asks for (not for DISABLED or no mode)."""
        mode = self.tls_mode
        if mode is None or mode == "DISABLED":
            raise ValueError(f"no TLS context for ssl-mode {mode}")
        for name, path in (("ssl-ca", self.ssl_ca), ("ssl-cert", self.ssl_cert), ("ssl-key", self.ssl_key)):
            if path and not Path(path).is_file():
                raise ConfigError(f"MySQL URL {self}: the {name} file {path} does not exist")
        try:
            context = ssl.create_default_context(cafile=self.ssl_ca)  # no ssl-ca: the system's CAs
            if self.ssl_cert:
                context.load_cert_chain(self.ssl_cert, keyfile=self.ssl_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"MySQL URL {self}: its TLS files cannot be loaded: {exc}") from exc
        # MySQL's and MariaDB's self-made certificates lack extensions the strict X.509 mode insists on.
        context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        context.check_hostname = mode == "VERIFY_IDENTITY"
        context.verify_mode = ssl.CERT_NONE if mode == "REQUIRED" else ssl.CERT_REQUIRED
        return context

    def tls_arguments(self) -> dict[str, Any]:
        """PyMySQL ``connect()`` keyword arguments for the TLS this URL asks for.

        With an SSLContext PyMySQL refuses a server that does not offer TLS before it sends the credentials
        ("SSL is required but the server doesn't support it"), so REQUIRED never falls back to plain text.
        """
        mode = self.tls_mode
        if mode is None:
            return {}
        if mode == "DISABLED":
            return {"ssl_disabled": True}
        return {"ssl": self.ssl_context()}

    def connect_arguments(self, database: bool = True) -> dict[str, Any]:
        """Everything PyMySQL's ``connect()`` needs to reach this server as this user (TLS included)."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "database": self.database if database else None, **self.tls_arguments()}

    def with_database(self, database: str) -> MysqlUrl:
        return dataclasses.replace(self, database=database)

    def _query(self) -> str:
        pairs = [(name, getattr(self, field)) for name, field in _URL_PARAMETERS.items() if getattr(self, field)]
        return f"?{urlencode(pairs, safe='/')}" if pairs else ""

    def render(self) -> str:
        """The full URL including the password: for ``stack env`` output only, never for logs."""
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}{self._query()}"
        )

    def __str__(self) -> str:
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{self.database}{self._query()}"


def _url_parameters(query: str, variable: str) -> dict[str, str | None]:
    """The TLS parameters of a MySQL URL's query string; anything else is an error, never silently dropped."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigError(f"{variable}: its query string is malformed") from exc
    unknown = sorted({name for name, _ in pairs if name not in _URL_PARAMETERS})
    if unknown:
        raise ConfigError(f"{variable}: unknown parameter(s) {', '.join(unknown)} (supported: "
                          f"{', '.join(_URL_PARAMETERS)})")
    found: dict[str, str | None] = {}
    for name, value in pairs:
        if _URL_PARAMETERS[name] in found:
            raise ConfigError(f"{variable}: parameter {name} is given twice")
        if not value.strip():
            raise ConfigError(f"{variable}: parameter {name} is empty")
        found[_URL_PARAMETERS[name]] = value.strip()
    mode = found.get("ssl_mode")
    if mode is not None:
        mode = found["ssl_mode"] = mode.upper().replace("-", "_")
        if mode not in SSL_MODES:
            raise ConfigError(f"{variable}: ssl-mode must be one of {', '.join(SSL_MODES)}, got {mode!r}")
    files = [name for name, field in _URL_PARAMETERS.items() if field != "ssl_mode" and field in found]
    if mode == "DISABLED" and files:
        raise ConfigError(f"{variable}: ssl-mode=DISABLED contradicts {', '.join(files)}")
    if "ssl_key" in found and "ssl_cert" not in found:
        raise ConfigError(f"{variable}: ssl-key needs ssl-cert (the client certificate it belongs to)")
    return found


# PIPELINE_KAFKA_<NAME>: the Kafka client security settings passed through (besides PIPELINE_KAFKA_BOOTSTRAP).
# The name after PIPELINE_KAFKA_, lower-cased, is kafka-python's keyword argument (and, with dots, Kafka's setting).
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_SECURITY_VARIABLES = (
    "PIPELINE_KAFKA_SECURITY_PROTOCOL", "PIPELINE_KAFKA_SASL_MECHANISM", "PIPELINE_KAFKA_SASL_PLAIN_USERNAME",
    "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD", "PIPELINE_KAFKA_SSL_CAFILE", "PIPELINE_KAFKA_SSL_CERTFILE",
    "PIPELINE_KAFKA_SSL_KEYFILE", "PIPELINE_KAFKA_SSL_PASSWORD", "PIPELINE_KAFKA_SSL_CHECK_HOSTNAME",
)
_KAFKA_OTHER_VARIABLES = ("PIPELINE_KAFKA_BOOTSTRAP",)
_JAAS_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def jaas_quoted(value: str) -> str:
    """A JAAS option value: double-quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclasses.dataclass(frozen=True)
class KafkaSecurity:
    """Kafka client security (``PIPELINE_KAFKA_SECURITY_PROTOCOL`` ...); unset fields keep the client defaults."""

    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_check_hostname: bool | None = None

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> KafkaSecurity:
        unknown = sorted(name for name in env if name.startswith("PIPELINE_KAFKA_")
                         and name not in KAFKA_SECURITY_VARIABLES and name not in _KAFKA_OTHER_VARIABLES)
        if unknown:
            raise ConfigError(f"unsupported Kafka setting(s) {', '.join(unknown)} (supported: "
                              f"{', '.join(KAFKA_SECURITY_VARIABLES)})")
        raw = {name.removeprefix("PIPELINE_KAFKA_").lower(): value.strip()
               for name in KAFKA_SECURITY_VARIABLES if (value := env.get(name, "")).strip()}
        values: dict[str, Any] = dict(raw)
        if "security_protocol" in values:
            values["security_protocol"] = protocol = values["security_protocol"].upper()
            if protocol not in KAFKA_PROTOCOLS:
                raise ConfigError(f"PIPELINE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_PROTOCOLS)}, "
                                  f"got {protocol!r}")
        if "sasl_mechanism" in values:
            values["sasl_mechanism"] = mechanism = values["sasl_mechanism"].upper()
            if mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigError(f"PIPELINE_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                                  f"got {mechanism!r}")
        if "ssl_check_hostname" in values:
            flag = values["ssl_check_hostname"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"PIPELINE_KAFKA_SSL_CHECK_HOSTNAME must be true or false, got {flag!r}")
            values["ssl_check_hostname"] = flag in ("true", "1", "yes")
        security = cls(**values)
        security._check()
        return security

    def _check(self) -> None:
        """Settings that would be silently unused, or a SASL login without what it needs, are errors."""
        protocol = self.security_protocol or "PLAINTEXT"
        sasl = {"PIPELINE_KAFKA_SASL_MECHANISM": self.sasl_mechanism,
                "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": self.sasl_plain_username,
                "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": self.sasl_plain_password}
        tls = {"PIPELINE_KAFKA_SSL_CAFILE": self.ssl_cafile, "PIPELINE_KAFKA_SSL_CERTFILE": self.ssl_certfile,
               "PIPELINE_KAFKA_SSL_KEYFILE": self.ssl_keyfile, "PIPELINE_KAFKA_SSL_PASSWORD": self.ssl_password,
               "PIPELINE_KAFKA_SSL_CHECK_HOSTNAME": self.ssl_check_hostname}
        if protocol.startswith("SASL_"):
            missing = [name for name, value in sasl.items() if value is None]
            if missing:
                raise ConfigError(f"PIPELINE_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        elif unused := [name for name, value in sasl.items() if value is not None]:
            raise ConfigError(f"{', '.join(unused)} need PIPELINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT")
        if not protocol.endswith("SSL") and (unused := [name for name, value in tls.items() if value is not None]):
            raise ConfigError(f"{', '.join(unused)} need PIPELINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("PIPELINE_KAFKA_SSL_KEYFILE needs PIPELINE_KAFKA_SSL_CERTFILE")
        for name, path in (("PIPELINE_KAFKA_SSL_CAFILE", self.ssl_cafile),
                           ("PIPELINE_KAFKA_SSL_CERTFILE", self.ssl_certfile),
                           ("PIPELINE_KAFKA_SSL_KEYFILE", self.ssl_keyfile)):
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: {path} is not a file")

    def client_options(self) -> dict[str, Any]:
        """kafka-python keyword arguments (``security_protocol``, ``sasl_plain_password`` ...): what was set."""
        return {field.name: value for field in dataclasses.fields(self)
                if (value := getattr(self, field.name)) is not None}

    def spark_options(self) -> dict[str, str]:
        """Spark Kafka source options (``kafka.security.protocol``, ``kafka.sasl.jaas.config`` ...).

        The Java client reads PEM files itself: the CA file as a PEM truststore; a client certificate file that also
        holds its key as a PEM keystore; a separate key file (PKCS#8, as Java requires) is passed by content.
        """
        options: dict[str, str] = {}
        if self.security_protocol:
            options["kafka.security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f"{_JAAS_MODULES[self.sasl_mechanism]} required"
                f" username={jaas_quoted(self.sasl_plain_username or '')}"
                f" password={jaas_quoted(self.sasl_plain_password or '')};"
            )
        if self.ssl_cafile:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.ssl_cafile
        if self.ssl_certfile:
            options["kafka.ssl.keystore.type"] = "PEM"
            if self.ssl_keyfile:
                key = _read(self.ssl_keyfile, "PIPELINE_KAFKA_SSL_KEYFILE")
                if "-----BEGIN RSA PRIVATE KEY-----" in key or "-----BEGIN EC PRIVATE KEY-----" in key:
                    raise ConfigError("PIPELINE_KAFKA_SSL_KEYFILE: Spark's Kafka client needs a PKCS#8 key "
                                      "(BEGIN PRIVATE KEY); convert it with: openssl pkcs8 -topk8 -in KEY -out KEY8")
                options["kafka.ssl.keystore.certificate.chain"] = _read(self.ssl_certfile,
                                                                        "PIPELINE_KAFKA_SSL_CERTFILE")
                options["kafka.ssl.keystore.key"] = key
            else:
                options["kafka.ssl.keystore.location"] = self.ssl_certfile
            if self.ssl_password:
                options["kafka.ssl.key.password"] = self.ssl_password
        if self.ssl_check_hostname is not None:
            options["kafka.ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else ""
        return options


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: {path} cannot be read: {exc}") from exc


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

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def url(name: str) -> MysqlUrl | None:
            raw = get(name)
            return MysqlUrl.parse(raw, name) if raw else None

        state_dir = Path(get("PIPELINE_STATE_DIR") or cls.state_dir).expanduser()
        watermark_raw = get("PIPELINE_WATERMARK_SECONDS") or "10"
        try:
            watermark = int(watermark_raw)
        except ValueError as exc:
            raise ConfigError(f"PIPELINE_WATERMARK_SECONDS must be a whole number, got {watermark_raw!r}") from exc
        if not 0 <= watermark <= 3600:
            raise ConfigError("PIPELINE_WATERMARK_SECONDS must be between 0 and 3600")
        topic = get("PIPELINE_TOPIC") or cls.topic
        partitions_raw = get("PIPELINE_TOPIC_PARTITIONS") or str(cls.topic_partitions)
        if not re.fullmatch(r"[0-9]{1,5}", partitions_raw) or not 1 <= int(partitions_raw) <= 10_000:
            raise ConfigError(f"PIPELINE_TOPIC_PARTITIONS must be a whole number from 1 to 10000, "
                              f"got {partitions_raw!r}")
        batch_offsets = max_offsets(get("PIPELINE_MAX_OFFSETS_PER_TRIGGER") or str(cls.max_offsets_per_trigger),
                                    "PIPELINE_MAX_OFFSETS_PER_TRIGGER")
        driver_raw = get("PIPELINE_DRIVER_BATCH_MAX") or str(cls.driver_batch_max)
        if not re.fullmatch(r"[0-9]{1,6}", driver_raw) or int(driver_raw) > MAX_DRIVER_BATCH:
            raise ConfigError(f"PIPELINE_DRIVER_BATCH_MAX must be a whole number from 0 to {MAX_DRIVER_BATCH:,}, "
                              f"got {driver_raw!r}")
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", topic):
            raise ConfigError(f"PIPELINE_TOPIC: {topic!r} is not a valid Kafka topic name")
        spark_master = get("PIPELINE_SPARK_MASTER")
        if spark_master and not spark_master.startswith(SPARK_MASTERS):
            raise ConfigError(f"PIPELINE_SPARK_MASTER must be local[N], spark://HOST:PORT, yarn or k8s://..., "
                              f"got {spark_master!r}")
        driver_memory = get("PIPELINE_SPARK_DRIVER_MEMORY") or cls.spark_driver_memory
        if not re.fullmatch(r"[0-9]{1,6}[kKmMgGtT]?", driver_memory):
            raise ConfigError(f"PIPELINE_SPARK_DRIVER_MEMORY must look like 1g or 512m, got {driver_memory!r}")
        log_level = (get("PIPELINE_SPARK_LOG_LEVEL") or cls.spark_log_level).upper()
        if log_level not in SPARK_LOG_LEVELS:
            raise ConfigError(f"PIPELINE_SPARK_LOG_LEVEL must be one of {', '.join(SPARK_LOG_LEVELS)}, "
                              f"got {log_level!r}")
        backend = get("PIPELINE_STACK_BACKEND")
        if backend is not None and backend not in STACK_BACKENDS:
            raise ConfigError(f"PIPELINE_STACK_BACKEND must be one of {', '.join(STACK_BACKENDS)}, got {backend!r}")
        return cls(
            kafka_bootstrap=get("PIPELINE_KAFKA_BOOTSTRAP"),
            mysql_url=url("PIPELINE_MYSQL_URL"),
            symbols=_symbols(get("PIPELINE_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)),
            topic=topic,
            topic_partitions=int(partitions_raw),
            max_offsets_per_trigger=batch_offsets,
            driver_batch_max=int(driver_raw),
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
               "PIPELINE_SPARK_LOG_LEVEL": self.spark_log_level}
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

    def read_url(self) -> MysqlUrl | None:
        """The read-only account's URL: PIPELINE_MYSQL_READ_URL, or else the writer's."""
        return self.mysql_read_url or self.mysql_url

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for every kafka-python client (security settings only; empty by default)."""
        return self.kafka_security.client_options()

    def kafka_spark_options(self) -> dict[str, str]:
        """``kafka.*`` options for Spark's Kafka source (security settings only; empty by default)."""
        return self.kafka_security.spark_options()
