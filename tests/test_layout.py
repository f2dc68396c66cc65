"""The layout of the code: which module may import which.

Every module under api/, projections/ and ledger/ is parsed (not imported) and every
import it makes is collected: at the top, inside functions, under `if TYPE_CHECKING`,
and `importlib.import_module` with a literal name. A function-level import that only
dodges a cycle is still part of it, so it counts here like any other.

- No import cycle runs through a module of api/graphql: the types come first, then
  the reads that fill them (reads, selects, loaders, the context), then the roots
  (queries, mutations, subscriptions, schema) and the compiler above them.
- One way between the packages: ledger/ imports neither projections nor api;
  projections/ does not import api.

Needs no database.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ledger", "projections", "api")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def named(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours an imported name stands for: the longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every dotted name the module imports, with its line; `from a import b` yields
    `a.b`, which stands for module a.b when there is one, else for a."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                yield source if alias.name == "*" else f"{source}.{alias.name}", node.lineno
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def imports() -> list[Import]:
    known = modules()
    found: set[Import] = set()
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line in imported_names(tree, module, path.name == "__init__.py"):
            target = named(name, known)
            if target is not None and target != module:
                found.add(Import(module, target, line))
    # One edge per pair of modules: the first line that makes it.
    first: dict[tuple[str, str], Import] = {}
    for edge in sorted(found, key=lambda e: e.line):
        first.setdefault((edge.importer, edge.imported), edge)
    return sorted(first.values(), key=lambda e: (e.importer, e.imported))


def cycles(edges: list[Import]) -> list[list[Import]]:
    """One cycle from each strongly connected component of more than one module."""
    graph: dict[str, list[Import]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, []).append(edge)
        graph.setdefault(edge.imported, [])
    # Tarjan's algorithm, iterative.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(graph[node]):
                work.append((node, i + 1))
                nxt = graph[node][i].imported
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_cycle_in(sorted(c), graph) for c in components]


def _cycle_in(component: list[str], graph: dict[str, list[Import]]) -> list[Import]:
    """A shortest cycle through the component's first module (breadth first)."""
    members = set(component)
    start = component[0]
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.imported not in members:
                    continue
                if edge.imported == start:
                    path = [edge]
                    while path[0].importer != start:
                        path.insert(0, came[path[0].importer])
                    return path
                if edge.imported not in came:
                    came[edge.imported] = edge
                    following.append(edge.imported)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def show(cycle: list[Import]) -> str:
    return "\n    ".join(str(edge) for edge in cycle)


def test_the_parser_sees_function_level_imports() -> None:
    """The check is only as good as the collection: an import inside a function, a
    relative one and a TYPE_CHECKING one all count."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from api.graphql import types\n"
        "def f():\n    from api.graphql.queries import ACCOUNT_SELECT\n"
        "def g():\n    from . import reads\n"
    )
    names = {n for n, _ in imported_names(ast.parse(source), "api.graphql.x", False)}
    known = modules()
    targets = {named(n, known) for n in names} - {None}
    assert {"api.graphql.types", "api.graphql.queries", "api.graphql.reads"} <= targets


def test_a_cycle_is_found_and_shown() -> None:
    edges = [Import("a", "b", 1), Import("b", "c", 2), Import("c", "a", 3), Import("c", "d", 4)]
    (cycle,) = cycles(edges)
    assert show(cycle) == "a -> b (line 1)\n    b -> c (line 2)\n    c -> a (line 3)"


def _in_graphql(module: str) -> bool:
    return module == "api.graphql" or module.startswith("api.graphql.")


def test_no_import_cycle_through_api_graphql() -> None:
    """Also none that leaves api/graphql and comes back (through api.state, say)."""
    found = [c for c in cycles(imports()) if any(_in_graphql(e.importer) for e in c)]
    if found:
        pytest.fail(
            "import cycles through api/graphql:\n    " + "\n\n    ".join(show(c) for c in found)
        )


def test_imports_run_one_way_between_the_packages() -> None:
    """ledger knows nothing of the read models or the API; the read models know
    nothing of the API."""
    below = {"ledger": ("projections", "api"), "projections": ("api",)}
    wrong = [
        str(edge)
        for edge in imports()
        if edge.imported.split(".")[0] in below.get(edge.importer.split(".")[0], ())
    ]
    if wrong:
        pytest.fail("imports against the one-way rule:\n    " + "\n    ".join(wrong))
