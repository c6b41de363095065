"""The shape the code promises, proved from its import graph (every ``import`` in every function, not names in
text): a pure core; adapters, Spark code and services that know nothing of the commands; commands that are handed
their connections by one composition root and never look them up; every setting read in one place and
documented; no module over 400 lines, no function over 60."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"

# The entry points: they alone build the composition root (``pipeline.compose``).
ENTRY_POINTS = {"pipeline.cli", "pipeline.submit", "pipeline.__main__", "pipeline.bench.__main__"}
# Below the commands: may import neither the commands, the bench, the root nor an entry point.
BELOW_COMMANDS = ("pipeline.core", "pipeline.adapters", "pipeline.spark", "pipeline.services", "pipeline.poller",
                  "pipeline.producer", "pipeline.replay", "pipeline.report", "pipeline.settings", "pipeline.errors")
ABOVE_THEM = ("pipeline.commands", "pipeline.bench", "pipeline.compose", *ENTRY_POINTS)
# Where the environment may be read, and why: settings (the PIPELINE_* variables, once), the local stack's and a
# child's process environment (services, the demo's child job), Spark's own "under spark-submit?" check.
ENVIRONMENT_READERS = {"pipeline.settings", "pipeline.cli", "pipeline.bench.__main__", "pipeline.spark.session",
                       "pipeline.commands.demo", "pipeline.bench.resources"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function, as the modules of this package it names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def importers_of(prefix: str) -> set[str]:
    return {name for name, targets in GRAPH.items() if any(t == prefix or t.startswith(prefix + ".") for t in targets)}


def test_the_core_imports_only_the_core_and_the_error_types() -> None:
    offending = {name: sorted(t for t in targets if t.startswith("pipeline") and
                              not t.startswith(("pipeline.core", "pipeline.errors")))
                 for name, targets in GRAPH.items() if name.startswith("pipeline.core")}
    assert not {k: v for k, v in offending.items() if v}


def test_nothing_below_the_commands_imports_them_the_root_or_an_entry_point() -> None:
    offending = {name: sorted(t for t in targets if t.startswith(ABOVE_THEM))
                 for name, targets in GRAPH.items() if name.startswith(BELOW_COMMANDS)}
    assert not {k: v for k, v in offending.items() if v}


def test_only_entry_points_build_the_composition_root() -> None:
    assert importers_of("pipeline.compose") <= ENTRY_POINTS, importers_of("pipeline.compose") - ENTRY_POINTS
    assert "pipeline.compose" in GRAPH["pipeline.cli"]  # the rule holds because the root is real, not absent


def test_connections_are_resolved_by_the_root_alone() -> None:
    """Nothing resolves a connection itself: the local stack's state is read by the root (and the stack service)."""
    assert importers_of("pipeline.services.stack") == {"pipeline.compose"}


def test_the_ports_belong_to_the_core_and_their_users_import_no_adapter_for_them() -> None:
    assert "pipeline.adapters.binance" not in GRAPH["pipeline.poller"]  # the source port: core.ports
    assert "pipeline.adapters.kafka_io" not in GRAPH["pipeline.producer"]  # the sink port: core.ports
    assert not {t for t in GRAPH["pipeline.core.unit_of_work"] if t.startswith("pipeline.adapters")}


def test_the_environment_is_read_where_it_is_meant_to_be_only() -> None:
    readers = {name for name, path in MODULES.items()
               if re.search(r"\bos\.environ\b|\bgetenv\(", path.read_text())}
    assert {r for r in readers if not r.startswith("pipeline.services")} <= ENVIRONMENT_READERS, readers


def test_no_module_over_400_lines_no_function_over_60_no_issue_comments() -> None:
    long_modules = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    long_functions = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                if (n := node.end_lineno - node.lineno + 1) > 60:
                    long_functions[f"{name}.{node.name}"] = n
    history = {name for name, path in MODULES.items() if re.search(r"\b[Ii]ssue \d+", path.read_text())}
    assert not long_modules and not long_functions and not history, (long_modules, long_functions, history)


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
