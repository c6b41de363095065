"""What a fresh Debian machine lacks for the local stack, and installing it (for ``pipeline demo`` only).

The processes backend needs a JVM, Maven and a MySQL-compatible server binary. ``missing_packages`` names the
Debian packages that provide whichever is absent; ``ensure`` installs them with apt-get when running as root on a
machine that has apt-get, and otherwise says exactly what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from pipeline.errors import ServiceError

# binary -> the Debian package that provides it
NEEDED = (
    (("java",), "openjdk-17-jre-headless"),
    (("mvn",), "maven"),
    (("mariadbd", "mysqld"), "mariadb-server"),
)
_SBIN = ("/usr/sbin", "/usr/local/sbin")


def _found(name: str) -> bool:
    return shutil.which(name) is not None or any(os.path.exists(os.path.join(d, name)) for d in _SBIN)


def missing_packages(found: Callable[[str], bool] = _found) -> list[str]:
    return [package for binaries, package in NEEDED if not any(found(b) for b in binaries)]


def ensure(log: Callable[[str], None]) -> None:
    packages = missing_packages()
    if not packages:
        return
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"the local stack needs {', '.join(packages)}; install them first, e.g.: sudo {command}")
    log(f"installing {', '.join(packages)} with apt-get (once)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise ServiceError(f"`{' '.join(args)}` failed: {tail[0]}")
    still = missing_packages()
    if still:
        raise ServiceError(f"installed {', '.join(packages)} but still missing {', '.join(still)}")
    print(f"installed {', '.join(packages)}", file=sys.stderr)
