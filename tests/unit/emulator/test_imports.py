"""The emulator's modules import in one direction: the server (`app.py`) wires the handler modules,
which take a `Context` from a leaf and never import the server back. Read from the source (every
import statement, those under `if TYPE_CHECKING:` and inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import segmind_provider.testing.emulator as emulator

EMULATOR = Path(emulator.__file__).parent
HANDLERS = ("account", "admin", "api", "storage", "workflows", "inputs", "responses", "context", "gate")


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = (package, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the package (at `root`, named `package`) it imports, anywhere in its source."""
    modules = {_module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""
                base = ".".join(part for part in (base, node.module or "") if part)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # A module's own packages are loaded before it: not an edge of a circle.
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_emulator_has_no_import_circle() -> None:
    graph = import_graph(EMULATOR, emulator.__name__)
    assert cycles(graph) == []
    app = f"{emulator.__name__}.app"
    for handler in HANDLERS:
        assert app not in graph[f"{emulator.__name__}.{handler}"], f"{handler} imports the server"


def test_a_type_only_circle_is_found(tmp_path: Path) -> None:
    """The check can fail: an import under `if TYPE_CHECKING:` closes a circle as much as any other."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "app.py").write_text("from . import handlers\n", encoding="utf-8")
    (package / "handlers.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .app import Server\n", encoding="utf-8"
    )
    (package / "leaf.py").write_text("import os\n", encoding="utf-8")
    assert cycles(import_graph(package, "pkg")) == [["pkg.app", "pkg.handlers"]]
