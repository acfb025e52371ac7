"""Rules of where things live, read from the source, so they stay true as the code moves."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from airflow.sdk import BaseOperator

import segmind_provider
from segmind_provider.hooks.segmind import SegmindHook

PACKAGE = Path(segmind_provider.__file__).parent
#: The API's status words: only ``status.py`` spells them (the emulator plays the API, so it does too).
STATUS_WORDS = frozenset({"QUEUED", "PROCESSING", "COMPLETED", "FAILED"})
STATUS_HOMES = {Path("status.py")}
#: The batch ledger's own item states, persisted in manifests and spelled like two API statuses.
LEDGER_STATES = Path("batch/ledger.py")


def _exempt(tree: ast.Module, where: Path) -> set[int]:
    """Ids of the string nodes that name rather than spell a status: ``__all__``, the ledger's states."""
    exempt: set[int] = set()
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        if target.id == "__all__":
            exempt.update(id(inner) for inner in ast.walk(node.value))
        elif (
            where == LEDGER_STATES and isinstance(node.value, ast.Constant) and node.value.value == target.id
        ):
            exempt.add(id(node.value))
    return exempt


def status_literals(root: Path = PACKAGE) -> list[str]:
    """``path:line`` of every string literal spelling an API status, outside its homes.

    Upper case only: the trigger events' lower-case ``"failed"`` is another vocabulary.
    """
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root)
        if where in STATUS_HOMES or where.parts[:2] == ("testing", "emulator"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        exempt = _exempt(tree, where)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.strip() in STATUS_WORDS
                and id(node) not in exempt
            ):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_no_status_literal_outside_the_status_module_and_the_emulator() -> None:
    assert status_literals() == [], "use segmind_provider.status (RequestStatus, read_status) instead"


def test_the_status_check_finds_a_literal(tmp_path: Path) -> None:
    """The check can fail: a status spelled in a module is found; a docstring mention is not."""
    (tmp_path / "module.py").write_text(
        '"""Ends COMPLETED or FAILED."""\n\nDONE = answer.get("status") == "COMPLETED"\n', encoding="utf-8"
    )
    assert status_literals(tmp_path) == ["module.py:3: 'COMPLETED'"]


def modules_without_an_operator(package: str = "segmind_provider.operators") -> set[str]:
    """The modules of ``package`` that define no ``BaseOperator`` subclass of their own."""
    found: set[str] = set()
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, prefix=f"{package}."):
        module = importlib.import_module(info.name)
        defined = (
            value for value in vars(module).values() if getattr(value, "__module__", None) == info.name
        )
        if not any(isinstance(value, type) and issubclass(value, BaseOperator) for value in defined):
            found.add(info.name)
    return found


def test_operators_holds_operators_only() -> None:
    """``operators/`` is a room for operators: ledgers, history and spend rules live in their own rooms."""
    assert modules_without_an_operator() == set()


def module_name(path: Path, root: Path) -> str:
    """``segmind_provider.hooks.segmind`` for ``root/hooks/segmind.py`` (a package for ``__init__.py``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, read from the source: every import counts, the
    ones in functions and under ``if TYPE_CHECKING:`` too."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                ]
            graph[name].update(target for target in targets if target in paths and target != name)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others (itself only round a circle)."""
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def import_circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that import each other, directly or round a circle (the graph's
    strongly connected components of more than one module)."""
    reach = {name: _reachable(graph, name) for name in graph}
    return {
        frozenset({name} | {other for other in reach[name] if name in reach[other]})
        for name in graph
        if name in reach[name]
    }


def private_hook_calls(root: Path = PACKAGE) -> list[str]:
    """``path:line`` of every use of one of ``SegmindHook``'s private members on something not ``self``
    outside the hook's own module: what another module needs from the hook is a public method."""
    private = {name for name in vars(SegmindHook) if name.startswith("_") and not name.startswith("__")}
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root)
        if where == Path("hooks/segmind.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{where}:{node.lineno}: .{node.attr}")
    return found


def test_no_module_uses_the_hooks_private_members() -> None:
    assert private_hook_calls() == []


def test_no_import_circle() -> None:
    """No module imports itself round a circle, type-only and in-function imports included."""
    graph = import_graph()
    circles = [sorted(circle) for circle in import_circles(graph)]
    assert circles == [], f"modules importing each other: {circles}"


def test_the_circle_check_finds_a_type_only_circle(tmp_path: Path) -> None:
    """The check can fail: two modules importing each other, one of them only for type hints."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("", encoding="utf-8")
    (root / "a.py").write_text("from pkg.b import B\n", encoding="utf-8")
    (root / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import a\n\nB = 1\n",
        encoding="utf-8",
    )
    (root / "c.py").write_text("from . import a\n", encoding="utf-8")
    assert import_circles(import_graph(root)) == {frozenset({"pkg.a", "pkg.b"})}


#: What the hook's helpers (``hooks/`` but the hook itself) and ``runtime`` may import besides each
#: other: they sit under the hook, the triggers and everything that waits.
BOTTOM = ("segmind_provider.hooks.", "segmind_provider.runtime")
BOTTOM_MAY_IMPORT = ("segmind_provider.catalog", "segmind_provider.exceptions", "segmind_provider.integrity")
BOTTOM_MAY_IMPORT_MODULES = frozenset(
    {"segmind_provider", "segmind_provider.durations", "segmind_provider.media", "segmind_provider.status"}
)
#: Arrows inside the bottom that point the wrong way: the connection names the key (``key_id``) for
#: every per-key state; the account host's calls are the hook's methods.
WRONG_WAY = frozenset(
    {
        ("segmind_provider.hooks.connection", "segmind_provider.hooks.budget"),
        ("segmind_provider.hooks.account", "segmind_provider.hooks.segmind"),
    }
)


def upward_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports from the bottom (hook helpers, ``runtime``) to anything above it, and the wrong-way ones."""
    found = {edge for edge in WRONG_WAY if edge[1] in graph.get(edge[0], set())}
    for source, targets in graph.items():
        if source == "segmind_provider.hooks.segmind" or not source.startswith(BOTTOM):
            continue
        found.update(
            (source, target)
            for target in targets
            if not target.startswith(BOTTOM + BOTTOM_MAY_IMPORT) and target not in BOTTOM_MAY_IMPORT_MODULES
        )
    return found


def test_the_bottom_imports_nothing_above_it() -> None:
    assert upward_arrows(import_graph()) == set()


def deferred_imports(root: Path = PACKAGE) -> set[tuple[str, str]]:
    """``(path, module)`` of each import of the package's own modules made inside a function: one
    that delays nothing (the module is loaded anyway) only hides an arrow."""
    graph_names = set(import_graph(root))
    found: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith(root.name)
                ):
                    base = node.module or ""
                    names = [f"{base}.{alias.name}" for alias in node.names]
                    found.update(
                        (str(path.relative_to(root)), name if name in graph_names else base) for name in names
                    )
                elif isinstance(node, ast.Import):
                    found.update(
                        (str(path.relative_to(root)), alias.name)
                        for alias in node.names
                        if alias.name.split(".")[0] == root.name
                    )
    return found


def test_no_deferred_import_of_our_own_modules() -> None:
    assert deferred_imports() == set()
