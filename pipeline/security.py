"""How to reach and authenticate to MySQL and Kafka: a MySQL URL (with its TLS parameters) and Kafka's security
settings (``PIPELINE_KAFKA_SECURITY_PROTOCOL``, SASL, TLS). Parsed and checked at construction; secrets never
appear in ``repr`` or ``str``."""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pipeline.errors import ConfigError

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
