"""A MariaDB/MySQL server as a local process with its own throwaway data directory, socket and port.

root authenticates over the unix socket only; the pipeline gets its own password user, with rights on its own
database (``pipeline``) and on throwaway ``pipeline_*`` databases used to isolate tests, and nothing else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.services import procs
from pipeline.settings import MysqlUrl

DATABASE = "pipeline"
USER = "pipeline"
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


def start(data_dir: Path) -> dict[str, object]:
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
        "--character-set-server=utf8mb4", "--default-time-zone=+00:00", *as_root,
    ], data_dir / "mysqld.out")
    password = secrets.token_urlsafe(18)
    with procs.stopped_on_failure(pid):
        procs.wait_for(lambda: _root_ping(socket_path), pid=pid, what="MySQL", log_path=log, timeout_s=60)
        with _root_connect(socket_path) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
            for host in ("127.0.0.1", "localhost"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY %s", (password,))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO '{USER}'@'{host}'")
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}\\_%`.* TO '{USER}'@'{host}'")
    url = MysqlUrl(user=USER, password=password, host="127.0.0.1", port=port, database=DATABASE)
    return {"pid": pid, "url": url.render(), "socket": str(socket_path), "data_dir": str(data_dir),
            "log": str(log)}


def ping(url: MysqlUrl) -> bool:
    import pymysql

    with pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         database=url.database, connect_timeout=3) as conn:
        conn.ping()
    return True
