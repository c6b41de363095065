"""Resolve Java artifacts from Maven Central once, into a cache directory outside the repo, and reuse them.

The only way to get Kafka (and Spark's Kafka connector) on these machines is Maven Central, so ``mvn`` with the
dependency plugin copies an artifact and its runtime dependencies into ``<cache>/<name>/lib``; a marker file written
last makes a half-finished download visible as missing rather than as a broken classpath.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import ServiceError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_MARKER = ".complete"


def _pom(coords: list[str], excludes: list[str]) -> str:
    deps = []
    for coord in coords:
        group, artifact, version = coord.split(":")
        exclusions = "".join(
            f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>"
            for g, a in (e.split(":") for e in excludes)
        )
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version><exclusions>{exclusions}</exclusions></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.pipeline</groupId><artifactId>runtime</artifactId><version>1</version>"
        f"<dependencies>{''.join(deps)}</dependencies></project>"
    )


def resolve(cache_dir: Path, name: str, coords: list[str], excludes: list[str] | None = None) -> list[Path]:
    """Jars of ``coords`` and their runtime dependencies, downloading them on first use."""
    lib = cache_dir / name / "lib"
    if (lib / _MARKER).exists():
        return sorted(lib.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is not installed; install it with: apt-get install maven")
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pom.xml").write_text(_pom(coords, excludes or []))
        proc = subprocess.run(
            [mvn, "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={lib}",
             "-DincludeScope=runtime"],
            cwd=work, capture_output=True, text=True, check=False,
        )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise ServiceError(f"mvn could not resolve {', '.join(coords)}: {' | '.join(tail)}")
    (lib / _MARKER).write_text("\n".join(coords))
    return sorted(lib.glob("*.jar"))
