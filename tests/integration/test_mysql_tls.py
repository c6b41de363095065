"""``?ssl-mode=`` in the MySQL URLs against real MariaDB servers: one started here with a certificate from a throwaway
CA, and the session's stack, which offers no TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters.mysql import connection
from pipeline.errors import ServiceError
from pipeline.services import mysql_process, procs
from pipeline.settings import MysqlUrl, Settings
from tests import cli_helpers
from tests.tls_helpers import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a server certificate naming ``localhost`` only (not 127.0.0.1: see the identity test)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"), hosts=("localhost",))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[MysqlUrl]:
    """A MariaDB offering TLS with ``tls``'s server certificate; the writer account's URL (no TLS parameters)."""
    service = mysql_process.start(tmp_path_factory.mktemp("mariadb-tls"),
                                  tuple(mysql_process.tls_options(tls.cert, tls.key)))
    try:
        yield MysqlUrl.parse(str(service["url"]))
    finally:
        procs.stop(int(str(service["pid"])))


def _cipher(url: MysqlUrl) -> str:
    conn = connection.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
            return str(cur.fetchone()[1])
    finally:
        conn.close()


def _with(url: MysqlUrl, query: str, host: str | None = None) -> MysqlUrl:
    base = url.render() if host is None else url.render().replace(f"@{url.host}:", f"@{host}:")
    return MysqlUrl.parse(f"{base}?{query}")


def test_required_and_verified_connections_use_tls(tls_server: MysqlUrl, tls: TlsFiles) -> None:
    assert _cipher(_with(tls_server, "ssl-mode=REQUIRED"))
    assert _cipher(_with(tls_server, f"ssl-mode=VERIFY_CA&ssl-ca={tls.ca}"))
    assert _cipher(_with(tls_server, f"ssl-mode=VERIFY_IDENTITY&ssl-ca={tls.ca}", host="localhost"))
    assert _cipher(_with(tls_server, "ssl-mode=DISABLED")) == ""


def test_a_certificate_from_another_ca_is_refused(tls_server: MysqlUrl, tmp_path: Path) -> None:
    stranger = make_tls_files(tmp_path / "other")
    with pytest.raises(ServiceError, match="CERTIFICATE_VERIFY_FAILED"):
        _cipher(_with(tls_server, f"ssl-mode=VERIFY_CA&ssl-ca={stranger.ca}"))
    # REQUIRED encrypts but vouches for nobody: it connects whoever signed the certificate.
    assert _cipher(_with(tls_server, f"ssl-mode=REQUIRED&ssl-ca={stranger.ca}"))


def test_a_host_the_certificate_does_not_name_is_refused(tls_server: MysqlUrl, tls: TlsFiles) -> None:
    # The same server, reached as 127.0.0.1, which its certificate does not name: the CA is right, the identity not.
    assert tls_server.host == "127.0.0.1"
    with pytest.raises(ServiceError, match="CERTIFICATE_VERIFY_FAILED"):
        _cipher(_with(tls_server, f"ssl-mode=VERIFY_IDENTITY&ssl-ca={tls.ca}"))
    assert _cipher(_with(tls_server, f"ssl-mode=VERIFY_CA&ssl-ca={tls.ca}"))  # the CA check alone passes


def test_required_against_a_server_without_tls_fails_instead_of_plain_text(services: Settings,
                                                                           settings_for: Settings) -> None:
    assert services.mysql_url is not None
    if _cipher(services.mysql_url):
        pytest.skip("this server offers TLS")
    with pytest.raises(ServiceError, match="SSL is required but the server doesn't support it"):
        _cipher(_with(services.mysql_url, "ssl-mode=REQUIRED"))
    assert settings_for.mysql_url is not None
    env = cli_helpers.env_for(settings_for, PIPELINE_MYSQL_URL=f"{settings_for.mysql_url.render()}?ssl-mode=REQUIRED")
    result = cli_helpers.run(["migrate"], env, timeout=120)
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "ssl-mode=REQUIRED" in result.stderr and "SSL is required" in result.stderr
    assert settings_for.mysql_url.password not in result.stderr
