"""A MariaDB/MySQL server as a local process with its own throwaway data directory, socket and port.

root authenticates over the unix socket only. Three password accounts, each with random passwords per start and
rights only on the pipeline's database (``pipeline``) and on throwaway ``pipeline_*`` databases used to isolate
tests (``PRIVILEGES``): ``pipeline_admin`` owns the schema (``pipeline migrate``), ``pipeline`` is the job's writer
(SELECT, INSERT, UPDATE, DELETE), ``pipeline_reader`` may only SELECT (``pipeline report``, Grafana).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.services import procs
from pipeline.settings import MysqlUrl

DATABASE = "pipeline"
ADMIN, WRITER, READER = "pipeline_admin", "pipeline", "pipeline_reader"
USER = WRITER
# What each account may do, on DATABASE and on every `pipeline_*` database; nothing anywhere else.
PRIVILEGES = {
    ADMIN: "CREATE, ALTER, INDEX, DROP, REFERENCES, SELECT, INSERT, UPDATE, DELETE",
    WRITER: "SELECT, INSERT, UPDATE, DELETE",
    READER: "SELECT",
}
_SERVER_NAMES = ("mariadbd", "mysqld")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin")


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in _SBIN if (Path(d) / name).exists()), None
        )
        if found:
            return found
    return None


def _root_connect(socket_path: Path):
    import pymysql

    return pymysql.connect(unix_socket=str(socket_path), user="root", connect_timeout=3, autocommit=True)


def _root_ping(socket_path: Path) -> bool:
    with _root_connect(socket_path) as conn:
        conn.ping()
    return True


def new_passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(18) for user in PRIVILEGES}


def account_statements(host: str, passwords: Mapping[str, str]) -> list[tuple[str, tuple[str, ...] | None]]:
    """The SQL (statement, parameters) that creates the three accounts for logins from ``host`` with exactly
    ``PRIVILEGES``; the same for the processes and the containers backend."""
    statements: list[tuple[str, tuple[str, ...] | None]] = []
    for user, privileges in PRIVILEGES.items():
        statements.append((f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY %s", (passwords[user],)))
        for database in (DATABASE, f"{DATABASE}\\_%"):
            statements.append((f"GRANT {privileges} ON `{database}`.* TO '{user}'@'{host}'", None))
    return statements


def urls(host: str, port: int, passwords: Mapping[str, str]) -> dict[str, str]:
    """The state entries ``url`` (writer), ``admin_url`` and ``read_url`` of a server's three accounts."""
    def url(user: str) -> str:
        return MysqlUrl(user=user, password=passwords[user], host=host, port=port, database=DATABASE).render()

    return {"url": url(WRITER), "admin_url": url(ADMIN), "read_url": url(READER)}


def tls_options(cert: Path, key: Path) -> list[str]:
    """mariadbd options that offer TLS with this certificate (tests of ``?ssl-mode=``)."""
    return [f"--ssl-cert={cert}", f"--ssl-key={key}"]


def start(data_dir: Path, extra_options: tuple[str, ...] = ()) -> dict[str, object]:
    server = _find(_SERVER_NAMES)
    if server is None:
        raise ServiceError(
            "no MySQL server binary (mariadbd or mysqld); install it with: apt-get install mariadb-server"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    datadir, socket_path, log = data_dir / "data", data_dir / "mysql.sock", data_dir / "mysql.log"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    install = _find(("mariadb-install-db", "mysql_install_db"))
    if install is None:
        raise ServiceError("mariadb-install-db not found; install it with: apt-get install mariadb-server")
    init = subprocess.run(
        [install, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=socket",
         "--skip-test-db", *as_root],
        capture_output=True, text=True, check=False,
    )
    if init.returncode != 0:
        raise ServiceError(f"initializing the MySQL data directory failed: {(init.stdout + init.stderr)[-300:]}")
    port = procs.free_port()
    pid = procs.spawn([
        server, "--no-defaults", f"--datadir={datadir}", f"--socket={socket_path}", f"--port={port}",
        "--bind-address=127.0.0.1", f"--pid-file={data_dir / 'mysql.pid'}", f"--log-error={log}",
        "--skip-name-resolve", "--innodb-buffer-pool-size=128M", "--max-connections=200",
        "--character-set-server=utf8mb4", "--default-time-zone=+00:00", *extra_options, *as_root,
    ], data_dir / "mysqld.out")
    passwords = new_passwords()
    with procs.stopped_on_failure(pid):
        identity = procs.identity(pid)
        procs.wait_for(lambda: _root_ping(socket_path), pid=pid, what="MySQL", log_path=log, timeout_s=60)
        with _root_connect(socket_path) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
            for host in ("127.0.0.1", "localhost"):
                for statement, params in account_statements(host, passwords):
                    cur.execute(statement, params)
    return {"pid": pid, "identity": identity, **urls("127.0.0.1", port, passwords), "socket": str(socket_path),
            "data_dir": str(data_dir), "log": str(log)}


def ping(url: MysqlUrl) -> bool:
    import pymysql

    with pymysql.connect(**url.connect_arguments(), connect_timeout=3) as conn:
        conn.ping()
    return True
