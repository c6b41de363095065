"""The shape the code promises: a pure core, Spark code that depends on nothing above it, one composition root,
and every setting read in one place and documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"
ABOVE = ("pipeline.cli", "pipeline.compose", "pipeline.services", "pipeline.demo", "pipeline.bench",
         "pipeline.status", "pipeline.report", "pipeline.replay")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_core_and_spark_import_nothing_above_them() -> None:
    offending = {}
    for folder in ("core", "spark"):
        for path in (PACKAGE / folder).glob("*.py"):
            bad = sorted(m for m in imports(path) if m.startswith(ABOVE))
            if bad:
                offending[str(path.relative_to(ROOT))] = bad
    assert not offending, offending
    assert not {m for p in (PACKAGE / "core").glob("*.py") for m in imports(p)
                if m.startswith(("pipeline.adapters", "pyspark", "kafka", "pymysql", "requests"))}


def test_every_pipeline_variable_is_read_by_settings_alone_and_documented() -> None:
    read_elsewhere = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text()
        hits = re.findall(r"(?:environ\.get|getenv|environ\[)\(?\s*[\"'](PIPELINE_[A-Z_]+)", text)
        if hits:
            read_elsewhere[str(path.relative_to(ROOT))] = hits
    assert not read_elsewhere, read_elsewhere
    settings = (PACKAGE / "settings.py").read_text()
    variables = set(re.findall(r"\bPIPELINE_[A-Z_]+[A-Z]\b", settings)) - {"PIPELINE_KAFKA_"}
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(v for v in variables if f"`{v}`" not in readme
                          and not (v.startswith("PIPELINE_KAFKA_") and v != "PIPELINE_KAFKA_BOOTSTRAP"))
    assert not undocumented, undocumented
