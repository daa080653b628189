"""The layout keeps its promises: no import cycles, no private names shared across modules, short
modules, click only in the CLI, and a library that never prints.

Imports inside functions count: a lazy import still ties two modules together (it only moves the
failure to the call).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
ROOT = PACKAGE.parent
#: Longest module, in lines (~500 is the aim; a little slack so a docstring does not break the build).
MAX_LINES = 550
#: The only part of the package that may import click.
CLI = PACKAGE / "cli"


def module_name(path: Path) -> str:
    """``pipeline/a/b.py`` -> ``pipeline.a.b``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def rel(name: str) -> str:
    return str(MODULES[name].relative_to(ROOT))


def known(name: str) -> str:
    """The longest prefix of a dotted name that is one of our modules ("" when none)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.dump(node.test)


def imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (functions too), except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def absolute(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` in module ``name``."""
    if not node.level:
        return node.module or ""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def dependencies(name: str) -> set[str]:
    """The modules of ours that module ``name`` imports (``from pkg import sub`` names ``pkg.sub``)."""
    deps: set[str] = set()
    for node in imports(TREES[name]):
        if isinstance(node, ast.Import):
            deps.update(known(a.name) for a in node.names if a.name.split(".")[0] == "pipeline")
            continue
        base = absolute(name, node)
        if base.split(".")[0] != "pipeline":
            continue
        for alias in node.names:
            full = f"{base}.{alias.name}"
            deps.add(full if full in MODULES else known(base))
    deps.discard(name)
    deps.discard("")
    return deps


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = import_cycles({name: dependencies(name) for name in MODULES})
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_private_names_across_modules():
    """``from pipeline.x import _name`` and ``module._name`` of a module of ours are both refused."""
    found = []
    for name, tree in TREES.items():
        ours: set[str] = set()  # local names bound to modules of ours
        for node in imports(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "pipeline":
                        ours.add(a.asname or "pipeline")
                        found += [f"{rel(name)}:{node.lineno}: import {a.name}"
                                  for part in a.name.split(".") if is_private(part)]
                continue
            base = absolute(name, node)
            if base.split(".")[0] != "pipeline":
                continue
            for a in node.names:
                if is_private(a.name) or any(is_private(part) for part in base.split(".")):
                    found.append(f"{rel(name)}:{node.lineno}: from {base} import {a.name}")
                if f"{base}.{a.name}" in MODULES:
                    ours.add(a.asname or a.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and is_private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in ours):
                found.append(f"{rel(name)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "private names used from another module:\n" + "\n".join(found)


def test_modules_are_short():
    long = {rel(name): n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_only_the_cli_imports_click():
    found = []
    for name, tree in TREES.items():
        if MODULES[name].is_relative_to(CLI):
            continue
        for node in imports(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] == "click" for m in modules):
                found.append(f"{rel(name)}:{node.lineno}")
    assert not found, "click imported outside pipeline/cli/: " + ", ".join(found)


def test_the_library_never_prints():
    found = [
        f"{rel(name)}:{node.lineno}"
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not found, "print( in pipeline/ (use a Progress, or click.echo in pipeline/cli/): " + ", ".join(found)


@pytest.mark.parametrize("name", ["pipeline.cli", "pipeline.cli.extract", "pipeline.cli.export"])
def test_the_checker_sees_the_cli(name):
    """The checks above read the real package (a moved folder would make them pass vacuously)."""
    assert name in MODULES and dependencies("pipeline.cli") >= {"pipeline.cli.extract", "pipeline.cli.export"}
