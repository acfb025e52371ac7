"""Every ``python`` block of README.md and docs/*.md runs, so an example a user copies works.

A block runs in a fresh namespace, named by its file and line in tracebacks. A block that defines a
DAG is also written to a file and parsed by Airflow's ``BundleDagBag``, as the dag-processor would:
it must give a DAG and no import error. Two marks on the line just above a block's fence say how it
runs, visibly in the Markdown:

- ``<!-- run with: emu -->``: with a started emulator (``SegmindEmulator``) bound to that name;
- ``<!-- not run: why -->``: a signature or a shape, not code; the reason is required.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from segmind_provider.testing.emulator.control import EmulatorControlError
from segmind_provider.testing.emulator.runner import SegmindEmulator

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?:^<!--\s*(?P<mark>not run|run with):\s*(?P<arg>[^>]*?)\s*-->\n)?"
    r"^(?P<indent>[ \t]*)```python\n(?P<code>.*?)^(?P=indent)```",
    re.S | re.M,
)
DAG_CODE = re.compile(r"\bDAG\(|@dag\b")


@dataclass(frozen=True)
class Example:
    """One ``python`` block: where it is, its code, and its mark."""

    where: str
    code: str
    mark: str | None = None
    arg: str = ""


def examples_in(text: str, name: str) -> list[Example]:
    """The ``python`` blocks of one Markdown text, dedented by their fence's indent."""
    found = []
    for match in BLOCK.finditer(text):
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        line = text.count("\n", 0, match.start("indent")) + 1
        found.append(Example(f"{name}:{line}", code, match["mark"], match["arg"] or ""))
    return found


EXAMPLES = [example for path in DOC_FILES for example in examples_in(path.read_text(), path.name)]


@contextmanager
def bound_names(example: Example) -> Iterator[dict[str, Any]]:
    """The names a ``run with:`` mark asks for, each a started emulator, stopped afterwards."""
    if example.mark != "run with":
        yield {}
        return
    with SegmindEmulator(time_scale=0.01) as emu:
        yield {name.strip(): emu for name in example.arg.split(",")}


def run_example(example: Example, tmp_path: Path) -> None:
    """Run one block; a DAG block is also parsed by Airflow's DagBag, which must find its DAG."""
    with bound_names(example) as names:
        namespace: dict[str, Any] = {"__name__": "docs_example", **names}
        linecache.cache[example.where] = (
            len(example.code),
            None,
            example.code.splitlines(True),
            example.where,
        )
        exec(compile(example.code, example.where, "exec"), namespace)
    if DAG_CODE.search(example.code):
        from airflow.dag_processing.dagbag import BundleDagBag

        module = tmp_path / f"{re.sub(r'[^a-z0-9]+', '_', example.where.lower())}.py"
        module.write_text(example.code)
        bag = BundleDagBag(dag_folder=module, bundle_path=tmp_path, bundle_name="docs-examples")
        assert not bag.import_errors, bag.import_errors
        assert bag.dags, f"{example.where} defines no DAG Airflow finds"


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.mark != "not run"], ids=lambda example: example.where
)
def test_the_example_runs(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.chdir(tmp_path)
    run_example(example, tmp_path)


def test_the_docs_have_examples_and_few_are_not_run() -> None:
    """The extraction finds the blocks (a changed fence or mark would otherwise select nothing), and
    each block left out says why."""
    assert len(EXAMPLES) >= 20
    skipped = [e for e in EXAMPLES if e.mark == "not run"]
    assert all(e.arg for e in skipped), [e.where for e in skipped if not e.arg]
    assert len(skipped) <= len(EXAMPLES) // 3, [e.where for e in skipped]


BROKEN = (
    "```python\nfrom segmind_provider.operators.segmind import SegmindOperator\n"
    'SegmindOperator(task_id="t", model="flux-1.1-pro", payload={}, output_pth="/tmp/x")\n```\n\n'
    "<!-- run with: emu -->\n```python\nemu.add_fault('nowhere', status=502)\n```\n\n"
    "```python\nimport datetime  # a DAG( is promised here but none is made\n```\n"
)


@pytest.mark.parametrize(
    ("index", "error"),
    [(0, TypeError), (1, EmulatorControlError), (2, AssertionError)],
    ids=["raises", "emu", "no-dag"],
)
def test_a_broken_example_fails(index: int, error: type[Exception], tmp_path: Path) -> None:
    """The runner can fail: a block that raises, one that misuses its emulator, a DAG block without a DAG."""
    broken = examples_in(BROKEN, "broken.md")
    assert [e.mark for e in broken] == [None, "run with", None]
    with pytest.raises(error):
        run_example(broken[index], tmp_path)
