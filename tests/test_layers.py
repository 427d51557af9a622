"""The import graph of ``optizoo/``: no cycles, and no library module imports the CLI.

The graph is read from the source with ``ast`` (every ``import`` statement, at module level or
inside a function; imports under ``if TYPE_CHECKING:`` are skipped because they never run). An
edge ``a -> b`` means module ``a`` imports module ``b``; ``from optizoo.x import y`` is an edge
to ``optizoo.x.y`` when that is a module, else to ``optizoo.x``. Importing a sub-module also
runs its package's ``__init__``, but that is not an edge of the graph: a package importing its
own sub-modules is how re-exports work. Layers are described in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "optizoo"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("optizoo"):
                    target = resolve(alias.name)
                    if target:
                        found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("optizoo"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in known else resolve(base)
                    if target:
                        found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` for every module of the package."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
    # a package importing its own sub-modules (re-exports) is not a dependency between layers
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_library_module_imports_the_cli() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(d for d in deps if d == "optizoo.cli" or d.startswith("optizoo.cli."))
        for name, deps in graph.items()
        if not (name == "optizoo.cli" or name.startswith("optizoo.cli."))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_plugin_host_imports_only_leaves() -> None:
    leaves = {"optizoo.errors", "optizoo._version", "optizoo._validate", "optizoo.rules.segments"}
    bases = {"optizoo.tasks.base", "optizoo.rules.base", "optizoo.preprocess.base"}
    allowed = leaves | bases
    graph = import_graph()
    deps = graph["optizoo.plugins"]
    assert deps <= allowed, f"optizoo.plugins imports {sorted(deps - allowed)}"
    for base in bases:  # the bases are leaves too: they import only leaves
        assert graph[base] <= leaves, f"{base} imports {sorted(graph[base] - leaves)}"


#: the leaves of docs/architecture.md: they import nothing from optizoo but each other
LEAVES = {
    "optizoo.errors",
    "optizoo._version",
    "optizoo._validate",
    "optizoo._io",
    "optizoo.seeds",
}


def test_the_leaves_import_only_leaves() -> None:
    graph = import_graph()
    for leaf in sorted(LEAVES):
        assert graph[leaf] <= LEAVES, f"{leaf} imports {sorted(graph[leaf] - LEAVES)}"


@pytest.mark.parametrize(
    ("a", "b", "cycle"),
    [
        ("from optizoo import b", "import optizoo.a", True),
        ("from optizoo import b", "x = 1", False),
        ("from optizoo.b import f", "def f():\n    from optizoo import a", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from optizoo import b",
            "from optizoo import a",
            False,
        ),
    ],
)
def test_the_cycle_finder_itself(a: str, b: str, cycle: bool) -> None:
    """The walk and the cycle search on a made-up two-module package."""
    files = {"optizoo.a": a, "optizoo.b": b}
    known = {*files, "optizoo"}
    graph = {
        mod: _imports(ast.parse(body), mod, False, known) - {"optizoo"}
        for mod, body in files.items()
    }
    assert (find_cycle(graph) is not None) is cycle
