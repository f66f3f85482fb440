"""The project's layering, checked from the source: no import cycles, nothing below the
orchestrator imports it, no module too long to read in one sitting.

Imports are read with ``ast`` from every module of the project's packages, at any depth: at
the top of a module, inside functions and inside ``try`` blocks alike (an import that only
runs in a function still ties the two modules together). Imports under ``if TYPE_CHECKING:``
are left out: they never run. Importing ``a.b.c`` also imports the packages ``a`` and ``a.b``,
so it counts as an import of those too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("activescale", "orchestrator", "trainers", "analysis")
# Layers: a package may import only the packages listed for it (and itself).
ALLOWED = {
    "activescale": {"activescale", "orchestrator", "trainers", "analysis"},
    "orchestrator": {"activescale", "orchestrator", "trainers", "analysis"},
    "analysis": {"activescale", "analysis", "trainers"},
    "trainers": {"activescale", "trainers"},
}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                assert isinstance(child, ast.If)
                stack.extend(child.orelse)  # only the `else:` branch runs
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child
            stack.append(child)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (with the packages that importing them runs)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                prefix = ".".join(parts[:n])
                # A module's own packages are already imported when it runs.
                if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                    found.add(prefix)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if target.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert not wrong, "imports across layers:\n" + "\n".join(wrong)


def test_no_private_names_across_modules() -> None:
    """``from x import _name`` reaches into another module's internals; use a public name."""
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                wrong += [
                    f"{name}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and f"{node.module}.{a.name}" not in modules
                ]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_too_long() -> None:
    long = {
        name: n
        for name, path in project_modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set()}, None),
        ({"a": {"a.x"}, "a.x": set()}, None),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_function_level_imports_count(tmp_path: Path) -> None:
    """The checker sees an import hidden in a function, and skips TYPE_CHECKING blocks."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import pkg.b\n"
        "def f():\n    from pkg import c\n"
    )
    path = tmp_path / "pkg" / "a.py"
    path.parent.mkdir()
    path.write_text(source)
    modules = {"pkg": tmp_path / "pkg/__init__.py", "pkg.a": path, "pkg.b": path, "pkg.c": path}
    assert imports_of("pkg.a", path, modules) == {"pkg.c"}
