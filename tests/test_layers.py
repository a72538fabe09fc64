"""The import rules of docs/architecture.md, read off the source: every ``import``, ``from ... import``
(at module level or inside a function) and every ``"pumsearch.module:attribute"`` plug-in reference
counts as a dependency of its module's layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pumsearch"
REFERENCE = re.compile(r"^(pumsearch(?:\.\w+)+):\w+$")

# layer -> the layers it must never depend on (its own upper or sideways neighbours)
FORBIDDEN = {
    "search": {"registry", "models", "http_common", "strategies", "backends", "scorers", "datasets", "testbed", "pum",
               "runs", "api", "cli", "cli_options", "cli_common", "viz"},
    "registry": {"search", "models", "http_common", "strategies", "backends", "scorers", "datasets", "testbed"},
    "http_common": {"search", "registry", "models", "strategies", "backends", "scorers", "datasets", "testbed"},
    "models": {"http_common", "strategies", "backends", "scorers", "datasets", "testbed", "runs", "api"},
    "backends": {"scorers", "strategies", "datasets", "testbed", "pum", "runs", "api", "cli", "cli_options",
                 "cli_common", "viz"},
    "scorers": {"backends", "strategies", "datasets", "testbed", "pum", "runs", "api", "cli", "cli_options",
                "cli_common", "viz"},
    "strategies": {"backends", "scorers", "datasets", "testbed", "pum", "runs", "api", "cli", "cli_options",
                   "cli_common", "viz"},
    "datasets": {"backends", "scorers", "strategies", "testbed", "pum", "runs", "api", "cli", "viz"},
    "runs": {"api", "cli", "cli_options", "testbed"},
    "pum": {"api", "runs", "testbed"},
    "api": {"cli", "cli_options", "cli_common", "runs", "testbed"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def dependencies(path: Path) -> set[str]:
    """The pumsearch modules ``path`` imports or names in a plug-in reference."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pumsearch")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y: relative to the module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.startswith("pumsearch"):
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := REFERENCE.match(node.value)):
            found.add(m.group(1))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def layer_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in MODULES.items():
        for target in dependencies(path):
            if layer(name) != layer(target):
                edges.setdefault((layer(name), layer(target)), []).append(f"{name} -> {target}")
    return edges


EDGES = layer_edges()


def test_the_reader_sees_imports_function_level_imports_and_plugin_references() -> None:
    """The checks below can fail: the reader finds each kind of dependency."""
    assert "pumsearch.search.protocols" in dependencies(MODULES["pumsearch.backends.scripted"])  # module level
    assert "pumsearch.backends.transformers_backend" in dependencies(MODULES["pumsearch.backends"])  # in a function
    assert "pumsearch.scorers.pum" in dependencies(MODULES["pumsearch.scorers"])  # a plug-in reference
    assert ("testbed", "scorers") in EDGES


@pytest.mark.parametrize("low", sorted(FORBIDDEN))
def test_no_layer_imports_what_sits_above_or_beside_it(low: str) -> None:
    broken = {edge: why for edge, why in EDGES.items() if edge[0] == low and edge[1] in FORBIDDEN[low]}
    assert not broken, "\n".join(f"{a} must not import {b}: {why}" for (a, b), why in broken.items())


def test_scorers_and_backends_never_import_each_other() -> None:
    assert ("scorers", "backends") not in EDGES and ("backends", "scorers") not in EDGES


def test_only_the_package_root_and_the_command_line_import_the_testbed() -> None:
    """The testbed is a plug-in: it registers itself; the core never names it."""
    importers = {a for (a, b) in EDGES if b == "testbed"}
    assert importers <= {"<root>", "cli"}, EDGES


def test_the_layers_form_no_cycle() -> None:
    """Below the package root (which imports everything to register the built-in plug-ins), no layer
    reaches itself through others: no lazy import hides a cycle."""
    graph = nx.DiGraph([(a, b) for a, b in EDGES if a != "<root>"])
    cycles = list(nx.simple_cycles(graph))
    why = [[EDGES[(x, y)][0] for x, y in zip(c, [*c[1:], c[0]], strict=True)] for c in cycles]
    assert not cycles, why
