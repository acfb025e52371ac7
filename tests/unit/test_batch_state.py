"""Where a batch's state lives between waves: bytes that grow with N, not N x waves (issue 22).

Each try is driven through its deferrals as in ``test_batch`` (real operator, real trigger, the
emulator on loopback); what is counted is what Airflow would write to its metadata database (each
wave's trigger kwargs and event, every ``task_state_store`` value) and what lands in the manifest's
files, seen from outside after every step.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG
from test_batch import Run, batch, payloads, submits

from segmind_provider.batch.ledger import COMPLETED, FAILED, PENDING, RUNNING, Item, Ledger
from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.operators.batch import SegmindBatchOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator


class CountingStore(dict):  # type: ignore[type-arg]
    """A ``task_state_store`` (as tests/conftest.py's) that counts the bytes written to it."""

    written = 0
    writes = 0

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.written += len(key) + len(json.dumps(value))
        self.writes += 1
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


class CountingRun(Run):
    """A try that also counts each wave's trigger kwargs and event, and the manifest files written."""

    def __init__(self, op: SegmindBatchOperator, context: dict[str, Any], out: Path) -> None:
        super().__init__(op, context)
        self.out, self.database, self.seen = out, 0, {}
        resume = op.execute_wave

        def counted(context: Any, event: dict[str, Any]) -> dict[str, Any]:
            self.database += len(json.dumps(event))  # the event, as the triggerer stores it
            return resume(context, event=event)

        op.execute_wave = counted  # type: ignore[method-assign]

    def _look(self) -> None:
        for path in [self.out / "manifest.json", *sorted((self.out / "manifest.d").glob("*.json"))]:
            if path.exists():
                self.seen[(path.name, path.stat().st_mtime_ns)] = path.stat().st_size

    async def step(self, call: Callable[[], dict[str, Any]]) -> Any:
        result, deferred = await super().step(call)
        self._look()
        if deferred is not None:
            self.database += len(json.dumps(deferred.trigger.serialize()[1]))
        return result, deferred

    @property
    def manifest_bytes(self) -> int:
        return sum(self.seen.values())


async def _bytes_per_item(n: int, tmp_path: Path, make_context: Callable[..., dict[str, Any]]) -> float:
    store = CountingStore()
    op = batch(tmp_path / str(n), payloads(n), max_in_flight=4)
    run = CountingRun(op, make_context(store, run_id="nightly"), tmp_path / str(n) / "out")
    manifest = await run.all()
    assert manifest["completed"] == n and manifest["waves"] >= n / 4
    return (run.database + store.written + run.manifest_bytes) / n


async def test_the_bytes_a_batch_writes_per_item_do_not_grow_with_its_size(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Four times the items (four times the waves at the same max_in_flight): about the same bytes per
    item. Carrying the ledger through every wave's trigger made it grow with the waves: 8.2 KB per item at 16,
    32 KB at 64 (x3.9) on the code before the journal."""
    small = await _bytes_per_item(16, tmp_path, make_context)
    large = await _bytes_per_item(64, tmp_path, make_context)
    assert large <= 1.25 * small, (small, large)  # the 2 KB budget at max_in_flight=100: bench/batch_scale.py


async def test_a_round_of_submits_is_remembered_in_a_few_store_writes(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Each store write is an execution-API round trip: 60 submits are remembered in groups
    (``batch.submits``), not in 60 writes (one per submit before), and a retry reads them all back."""
    store = CountingStore()
    op = batch(tmp_path, payloads(60), max_in_flight=60)
    run = Run(op, make_context(store, run_id="nightly"))
    await run.deferred_once()
    groups = [value for key, value in store.items() if key.startswith("segmind_batch_submits/")]
    assert sum(len(group) for group in groups) == 60 and store.writes < 60 / 5, store.writes
    emulator.clear_calls()
    retry = await Run(
        batch(tmp_path, payloads(60), max_in_flight=60), make_context(store, run_id="nightly")
    ).all()
    assert retry["completed"] == 60 and submits(emulator) == 0


async def test_a_wave_resumed_on_another_machine_reads_its_journal_from_the_store(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """The journal's local copy is only a cache: a resume without it (another Celery worker) reads what
    it lacks from ``task_state_store`` and pays for nothing twice."""
    op = batch(tmp_path, payloads(12), max_in_flight=4)
    run = Run(op, make_context(state_store, run_id="nightly"))
    local = Path(tempfile.gettempdir()) / "segmind-batch-journal"

    async def elsewhere(call: Callable[[], dict[str, Any]]) -> Any:
        shutil.rmtree(local, ignore_errors=True)  # every wave resumes where no copy was written
        return await Run.step(run, call)

    run.step = elsewhere  # type: ignore[method-assign]
    manifest = await run.all()
    assert manifest["completed"] == 12 and submits(emulator) == 12 and run.triggers >= 3


async def test_the_journal_keeps_no_state_in_the_trigger_when_the_store_holds_it(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """With a store (Airflow 3.3) a wave's trigger holds the requests it watches and nothing else; without
    one (3.2) the journal rides in it, and the batch still completes."""
    with_store = Run(batch(tmp_path / "a", payloads(6), max_in_flight=2), make_context(state_store))
    deferred = await with_store.deferred_once()
    kwargs = deferred.trigger.serialize()[1]
    assert kwargs["state"] is None and len(kwargs["requests"]) == 2
    await with_store.resume(deferred)
    without = Run(batch(tmp_path / "b", payloads(6), max_in_flight=2), make_context())
    deferred = await without.deferred_once()
    assert isinstance(deferred.trigger.serialize()[1]["state"], str)
    assert (await without.resume(deferred))["completed"] == 6


TEXTS = [
    "a plain prompt",
    "ends in a newline\n",
    "a windows\r\nline",
    "{{ ds }}",
    "{% if true %}x{% endif %}",
    "{# a comment #} text",
    "{ not a template }",
    "123",
    "",
]


@pytest.mark.parametrize("native", [False, True])
def test_payload_text_renders_as_jinja_would_render_it(native: bool) -> None:
    """Plain text skips Jinja (compiling 10,000 prompts per resume costs seconds) only where Jinja would
    give it back unchanged: a trailing newline, CRLF, any delimiter or a native environment still render."""
    with DAG("render", render_template_as_native_obj=native) as dag:
        op = batch(None, [{"prompt": text} for text in TEXTS])
    context: dict[str, Any] = {"ds": "2026-12-07", "dag": dag}
    env = dag.get_template_env()
    ours = [op.render_template(text, context, env) for text in TEXTS]
    airflows = [super(SegmindBatchOperator, op).render_template(text, context, env) for text in TEXTS]
    assert ours == airflows
    assert ours[1] == "ends in a newline" and ours[3] == "2026-12-07"


async def test_payloads_that_change_between_waves_are_refused(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """A resumed wave maps payloads to the keys its try planned; a list that changed length says so."""
    op = batch(tmp_path, payloads(6), max_in_flight=2)
    run = Run(op, make_context(state_store))
    deferred = await run.deferred_once()
    op.payloads = payloads(5)
    with pytest.raises(SegmindValidationError, match="changed between two waves"):
        await run.resume(deferred)
    assert submits(emulator) == 2


async def test_payloads_can_be_a_json_lines_file(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """A reference keeps the payloads out of the rendered fields: read at the start and at each resume,
    keyed as a list's items are; a line that is not JSON is refused, by number, before any submit."""
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(p) + "\n" for p in payloads(5)) + "\n")
    manifest = await Run(batch(tmp_path, str(items), max_in_flight=2), make_context(state_store)).all()
    listed = await Run(batch(tmp_path / "list", payloads(5), max_in_flight=2), make_context()).all()
    assert manifest["completed"] == 5 and set(manifest["items"]) == set(listed["items"])
    items.write_text(json.dumps(payloads(1)[0]) + "\n{not json\n")
    with pytest.raises(SegmindValidationError, match="line 2 is not JSON"):
        await Run(batch(tmp_path / "bad", str(items)), make_context()).all()
    assert submits(emulator) == 10


def test_the_ledgers_indexes_agree_with_its_items_while_threads_change_them() -> None:
    """A wave reads the ledger by status, its changes and its unpriced items from indexes kept as items
    change (on the submit and store threads at once), not by walking every item; they must say what
    walking would."""
    ledger = Ledger((Item(f"item-{i}", f"{i:064x}") for i in range(2_000)), started_at=1.0)
    assert [i.key for i in ledger.first(PENDING, 3)] == ["item-0", "item-1", "item-2"]
    ledger.settle()

    def work(part: int) -> None:
        for index in range(part, 2_000, 8):
            item = ledger.items[f"item-{index}"]
            item.request_id, item.submitted_at, item.status = f"r{index}", 2.0, RUNNING
            if index % 3 == 0:
                item.end(COMPLETED, uris=[f"/out/{index}.png"], digests=[(10, "ab")])
            elif index % 3 == 1:
                item.end(FAILED, error="blocked")
                if index % 2:
                    item.cost = 0.05

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    items = list(ledger.items.values())
    for status in (PENDING, RUNNING, COMPLETED, FAILED):
        assert {i.key for i in ledger.with_status(status)} == {i.key for i in items if i.status == status}
        assert ledger.count(status) == sum(1 for i in items if i.status == status)
    assert {i.key for i in ledger.changed()} == {i.key for i in items}  # every item changed since settle
    wanted = {i.key for i in items if i.status in (COMPLETED, FAILED) and i.cost is None}
    assert {i.key for i in ledger.unpriced()} == wanted and wanted
    assert set(ledger.by_request(RUNNING)) == {i.request_id for i in items if i.status == RUNNING}
    ledger.settle()
    assert ledger.changed() == [] and not any(i.changed for i in items)
    assert "item-4" in {i.key for i in ledger.unpriced()}
    ledger.items["item-4"].cost = 0.05  # one change: one item to record, one fewer to price
    assert [i.key for i in ledger.changed()] == ["item-4"]
    assert "item-4" not in {i.key for i in ledger.unpriced()}
