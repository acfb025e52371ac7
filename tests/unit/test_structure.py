"""Rules of where things live, read from the source, so they stay true as the code moves."""

from __future__ import annotations

import ast
from pathlib import Path

import segmind_provider

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
