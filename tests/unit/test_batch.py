"""SegmindBatchOperator and SegmindBatchTrigger against the emulator on loopback (100x time scale).

Each deferral is driven as Airflow drives it: ``execute`` raises TaskDeferred carrying one trigger,
the trigger's one event goes to ``execute_wave`` with the deferral's kwargs, until a try returns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from PIL import Image

from segmind_provider.exceptions import (
    SegmindBatchItemsFailedError,
    SegmindCreditFloorError,
    SegmindValidationError,
)
from segmind_provider.operators.segmind import SegmindBatchOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.batch import SegmindBatchTrigger

FLUX = "flux-1.1-pro"
PRICE = 0.05  # flux-1.1-pro in the catalog, and what the emulator charges
ITEM_KEYS = {"request_id", "status", "output_uris", "error", "cost"}


#: Small images: the emulator draws every output, and a 1024x1024 PNG is most of a test's time.
SMALL = {"aspect_ratio": "custom", "width": 256, "height": 256}


def payloads(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"prompt": f"a lighthouse, variant {i}", "output_format": "png", "seed": i, **SMALL, **extra}
        for i in range(n)
    ]


def batch(tmp_path: Path | None, items: Any, **kw: Any) -> SegmindBatchOperator:
    args: dict[str, Any] = {
        "task_id": "campaign",
        "model": FLUX,
        "payloads": items,
        "output_dir": str(tmp_path / "out") if tmp_path is not None else None,
        "deferrable": True,
        "worker_wait": 0,  # every wave defers: these tests drive the deferrals (the default: below)
        "poll_interval": 0.2,
        "timeout": 60,
        "max_in_flight": 8,
    }
    args.update(kw)
    return SegmindBatchOperator(**args)


class Run:
    """One try of the operator driven through its deferrals; counts the triggers it deferred to."""

    def __init__(self, op: SegmindBatchOperator, context: dict[str, Any]) -> None:
        self.op, self.context, self.triggers = op, context, 0

    async def step(
        self, call: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, TaskDeferred | None]:
        try:  # in a thread, as in a worker: no event loop runs there
            return await asyncio.to_thread(call), None
        except TaskDeferred as deferred:
            assert isinstance(deferred.trigger, SegmindBatchTrigger)
            assert deferred.method_name == "execute_wave"
            self.triggers += 1
            return None, deferred

    async def deferred_once(self) -> TaskDeferred:
        result, deferred = await self.step(lambda: self.op.execute(self.context))
        assert result is None and deferred is not None
        return deferred

    async def resume(self, deferred: TaskDeferred) -> dict[str, Any]:
        while True:
            trigger = deferred.trigger
            kind, kwargs = trigger.serialize()
            assert kind == "segmind_provider.triggers.batch.SegmindBatchTrigger"
            rebuilt = SegmindBatchTrigger(**json.loads(json.dumps(kwargs)))  # as the triggerer rebuilds it
            (event,) = [e async for e in rebuilt.run()]
            assert not deferred.kwargs  # dags test would drop them: the state travels in the trigger
            payload = json.loads(json.dumps(event.payload))  # events are stored as JSON

            def resume_call(p: dict[str, Any] = payload) -> dict[str, Any]:
                return self.op.execute_wave(self.context, event=p)

            result, again = await self.step(resume_call)
            if result is not None:
                return result
            assert again is not None
            deferred = again

    async def all(self) -> dict[str, Any]:
        result, deferred = await self.step(lambda: self.op.execute(self.context))
        if result is not None:
            return result
        assert deferred is not None
        return await self.resume(deferred)


def submits(emulator: SegmindEmulator) -> int:
    return len(emulator.calls(endpoint="submit"))


async def test_a_batch_stores_every_item_once_and_writes_the_manifest(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    run = Run(batch(tmp_path, payloads(20)), make_context())
    manifest = await run.all()
    assert submits(emulator) == 20
    assert run.triggers == manifest["waves"] >= 3  # 20 items, 8 in flight at most: several waves
    assert manifest["completed"] == 20 and manifest["failed"] == 0 and manifest["not_started"] == []
    assert set(manifest["items"]) == set(manifest["order"]) and len(manifest["order"]) == 20
    for key, entry in manifest["items"].items():
        assert set(entry) >= ITEM_KEYS and entry["status"] == "COMPLETED" and entry["error"] is None
        (uri,) = entry["output_uris"]
        assert uri == str(tmp_path / "out" / f"{key}.png")
        with Image.open(uri) as image:
            assert image.format == "PNG"
        assert entry["cost"] == pytest.approx(PRICE)  # from the account's request history
    assert manifest["cost"] == pytest.approx(20 * PRICE)
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        on_disk["items"] == json.loads(json.dumps(manifest["items"])) and on_disk["cost"] == manifest["cost"]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{key}.png" for key in manifest["order"]] + ["manifest.json"]
    )
    # Costs came from the history in pages, never one call per request.
    assert len(emulator.calls(endpoint="history")) == 1
    assert len(emulator.calls(endpoint="history_item")) == 0


async def test_waves_due_within_worker_wait_are_waited_for_in_the_worker(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """0.14 s jobs: deferring each wave would cost more than the wave; the worker waits for them."""
    run = Run(batch(tmp_path, payloads(20), worker_wait=30), make_context())
    manifest = await run.all()
    assert run.triggers == 0 and manifest["waves"] >= 3  # several waves, none deferred
    assert submits(emulator) == 20 and manifest["completed"] == 20
    assert len(list((tmp_path / "out").glob("*.png"))) == 20


async def test_a_wave_expected_after_worker_wait_defers_without_polling(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    op = batch(tmp_path, payloads(4), worker_wait=5, expected_duration=60)  # "a minute a job"
    await Run(op, make_context()).deferred_once()
    assert len(emulator.calls(endpoint="status")) == 0  # deferred at once: no wait in the worker


async def test_a_short_wave_that_runs_late_defers_after_worker_wait_and_pays_once(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    emulator.add_fault("status", delay=1.0, count=4)  # the first polls answer long after worker_wait
    op = batch(tmp_path, payloads(4), worker_wait=0.3, expected_duration=0.05)
    run = Run(op, make_context())
    deferred = await run.deferred_once()
    assert emulator.faults() == []  # used up: the four late polls were sent from the worker, which waited
    manifest = await run.resume(deferred)
    assert run.triggers == 1 and manifest["completed"] == 4 and submits(emulator) == 4


async def test_the_trigger_only_reads_and_yields_one_event(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    deferred = await Run(batch(tmp_path, payloads(5)), make_context()).deferred_once()
    emulator.clear_calls()
    events = [e async for e in deferred.trigger.run()]
    assert len(events) == 1 and events[0].payload["status"] == "wave"
    assert len(events[0].payload["ended"]) == 5
    assert {c["method"] for c in emulator.calls()} == {"GET"}
    kwargs = json.dumps(deferred.trigger.serialize()[1])
    assert (
        emulator.api_key not in kwargs and "prompt" not in kwargs
    )  # ids, numbers, paths: no key, no payload
    assert len(repr(deferred.trigger)) < 200


async def test_a_wave_event_carries_every_end_its_polls_already_found(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """The event is due at ``refill_after`` ends, but polls already sent answer first: a wave whose jobs
    all ended before the trigger ran hands them all to the worker, not half (and half a wave again)."""
    deferred = await Run(batch(tmp_path, payloads(12), max_in_flight=6), make_context()).deferred_once()
    trigger = deferred.trigger
    assert isinstance(trigger, SegmindBatchTrigger) and trigger.refill_after == 3
    await asyncio.sleep(1.0)  # every job has ended (0.14 s at this time scale)
    emulator.clear_calls()
    emulator.add_fault("status", delay=0.5, count=3)  # three polls answer late, the others at once
    (event,) = [e async for e in trigger.run()]
    polls = [c for c in emulator.calls(endpoint="status") if c["path"].split("/")[3] in trigger.requests]
    assert len(polls) == 6  # one poll each: none added, none thrown away
    assert len(event.payload["ended"]) == 6 and event.payload["running"] == 0


@pytest.mark.parametrize("bad", [{"worker_wait": -1}, {"max_in_flight": 0}])
def test_a_negative_worker_wait_and_an_empty_wave_are_refused_when_the_dag_is_parsed(
    bad: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        batch(None, payloads(1), **bad)


async def test_a_keyed_batch_without_deferral_stores_by_key(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    items = {"hero": payloads(1)[0], "sku-42": payloads(2)[1]}
    manifest = await Run(batch(tmp_path, items, deferrable=False), make_context()).all()
    assert set(manifest["items"]) == {"hero", "sku-42"}
    assert (tmp_path / "out" / "hero.png").is_file() and (tmp_path / "out" / "sku-42.png").is_file()
    assert submits(emulator) == 2


async def test_running_again_pays_for_nothing_and_one_changed_payload_for_one(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    items = payloads(10)
    await Run(batch(tmp_path, items), make_context()).all()
    assert submits(emulator) == 10
    emulator.clear_calls()
    again = await Run(batch(tmp_path, items), make_context()).all()
    assert submits(emulator) == 0
    assert again["reused"] == 10 and all(e["reused"] for e in again["items"].values())
    assert again["cost"] == 0 and again["completed"] == 10

    changed = [dict(p) for p in items]
    changed[3]["prompt"] = "a lighthouse at night"
    keys = again["order"]  # a list's items are keyed by what they ask: docs/operator.md
    (tmp_path / "out" / f"{keys[5]}.png").unlink()  # a stored output that is gone is made again
    (tmp_path / "out" / f"{keys[7]}.png").write_bytes(
        (tmp_path / "out" / f"{keys[7]}.png").read_bytes()[:300]
    )  # and a broken one
    emulator.clear_calls()
    third = await Run(batch(tmp_path, changed), make_context()).all()
    assert submits(emulator) == 3
    assert {k for k, e in third["items"].items() if not e["reused"]} == {third["order"][3], keys[5], keys[7]}
    with Image.open(tmp_path / "out" / f"{keys[7]}.png") as image:
        image.load()


async def test_reuse_can_be_turned_off(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    await Run(batch(tmp_path, payloads(3)), make_context()).all()
    emulator.clear_calls()
    manifest = await Run(batch(tmp_path, payloads(3), reuse=False), make_context()).all()
    assert submits(emulator) == 3 and manifest["reused"] == 0


SIZES = [
    pytest.param(24, 10, id="24"),
    # The scale: the journal and the manifest's deltas carry it (make test-e2e runs it).
    pytest.param(2000, 200, id="2000", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("n", "in_flight"), SIZES)
@pytest.mark.parametrize("how", ["retry", "new run, manifest only", "resumed from the old event"])
async def test_a_retry_after_the_worker_died_mid_batch_pays_for_nothing_twice(
    emulator: SegmindEmulator,
    tmp_path: Path,
    make_context: Callable[..., dict[str, Any]],
    state_store: Any,
    how: str,
    n: int,
    in_flight: int,
) -> None:
    """A retry finds what was paid for in task_state_store; a new run (Airflow 3.2, or a replaced run)
    finds the requests still running in the manifest written at each wave; a try resumed again from
    an event older than its last round of submits (``airflow tasks test`` after a kill) sees the store
    counted a later round and re-attaches before submitting."""
    op = batch(tmp_path, payloads(n), max_in_flight=in_flight)
    first = Run(op, make_context(state_store))
    deferred = await first.deferred_once()
    # The first wave ends and is stored, the second is submitted, then the worker dies while deferred.
    trigger = SegmindBatchTrigger(**deferred.trigger.serialize()[1])
    (event,) = [e async for e in trigger.run()]
    with pytest.raises(TaskDeferred):
        await asyncio.to_thread(op.execute_wave, first.context, event=event.payload)
    paid = {c.get("request_id") for c in emulator.requests()}
    assert in_flight < len(paid) < n
    again = batch(tmp_path, payloads(n), max_in_flight=in_flight)
    if how == "resumed from the old event":
        run = Run(again, make_context(state_store))
        result, deferred_again = await run.step(lambda: again.execute_wave(run.context, event=event.payload))
        assert result is None and deferred_again is not None
        retry = await run.resume(deferred_again)
    else:
        if how != "retry":
            state_store.clear()
        retry = await Run(again, make_context(state_store if how == "retry" else None)).all()
    assert submits(emulator) == n  # only what had never been submitted was submitted again
    assert len(emulator.requests()) == n
    assert retry["completed"] == n
    assert {e["request_id"] for e in retry["items"].values()} == {
        r["request_id"] for r in emulator.requests()
    }
    reused = [e for e in retry["items"].values() if e["reused"]]
    if how == "new run, manifest only":  # what the earlier run made cost this run nothing
        assert reused and all(e["cost"] == 0.0 for e in reused)
    else:  # the same task instance paid for all n, its earlier try's stored items included
        assert retry["cost"] == pytest.approx(n * PRICE), retry["items"]


async def test_failed_items_are_listed_and_fail_the_task_when_asked(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    emulator.configure(blocked_words=["forbidden"])
    items = payloads(6)
    items[2]["prompt"] = "a forbidden lighthouse"
    with pytest.raises(SegmindBatchItemsFailedError) as raised:
        await Run(batch(tmp_path, items), make_context()).all()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    blocked = manifest["order"][2]
    assert f"{blocked} (content blocked: " in str(raised.value) and "1 of 6 items failed" in str(raised.value)
    assert manifest["failed"] == 1 and manifest["completed"] == 5
    assert "moderation" in manifest["items"][blocked]["error"].lower()
    emulator.clear_calls()
    tolerant = await Run(batch(tmp_path, items, fail_on_item_failure=False), make_context()).all()
    assert tolerant["failed"] == 1 and tolerant["reused"] == 5 and submits(emulator) == 1


async def test_a_credit_floor_stops_submitting_and_names_the_spend_and_the_unstarted(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    floor = 1.0
    emulator.configure(credits=floor + 40 * PRICE)  # covers 40 images above the floor
    with pytest.raises(SegmindCreditFloorError) as raised:
        await Run(batch(tmp_path, payloads(100), credit_floor=floor, max_in_flight=16), make_context()).all()
    assert isinstance(raised.value, AirflowFailException)
    assert submits(emulator) == 40
    assert emulator.config()["credits_remaining"] >= floor - 1e-9  # no submit went past the floor
    text = str(raised.value)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "60 of 100 items were not started" in text and ", ".join(manifest["order"][40:43]) in text
    assert "$2.0000 from the request history for 40 of 40 submitted items" in text
    assert "balance about $1.0000, floor $1.0000" in text
    assert manifest["completed"] == 40 and len(manifest["not_started"]) == 60
    assert manifest["items"][manifest["order"][99]]["status"] == "NOT_STARTED"


async def test_the_floor_comes_from_the_connection_too(
    emulator: SegmindEmulator,
    tmp_path: Path,
    make_context: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = json.loads(emulator.connection_json())
    conn["extra"]["credit_floor"] = 5.0
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    emulator.configure(credits=5.0 + 2 * PRICE)
    with pytest.raises(SegmindCreditFloorError):
        await Run(batch(tmp_path, payloads(3)), make_context()).all()
    assert submits(emulator) == 2


async def test_polling_the_result_endpoint_saves_the_result_fetch_and_falls_back_safely(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    manifest = await Run(batch(tmp_path, payloads(6), poll_endpoint="result"), make_context()).all()
    assert manifest["completed"] == 6
    assert len(emulator.calls(endpoint="status")) == 0
    result_calls = len(emulator.calls(endpoint="result"))  # the polls themselves; no separate fetch
    assert result_calls >= 6
    emulator.reset()
    emulator.add_fault(
        "result", status=404, count=1
    )  # a service that does not answer there before completion
    manifest = await Run(batch(tmp_path / "b", payloads(4), poll_endpoint="result"), make_context()).all()
    # polls already on their way may still finish on the result endpoint; the rest went to the status one
    assert manifest["completed"] == 4 and len(emulator.calls(endpoint="status")) >= 1


async def test_bad_items_are_refused_before_anything_is_spent(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    items = payloads(4)
    items[1]["output_format"] = "bmp"
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, items), make_context()).all()
    assert "item '1'" in str(raised.value)
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, {"../escape": payloads(1)[0]}), make_context()).all()
    assert "cannot be a file name" in str(raised.value)
    with pytest.raises(SegmindValidationError):
        await Run(
            batch(tmp_path, payloads(2), credit_floor=1.0, model="not-in-the-catalog", validate=False),
            make_context(),
        ).all()
    assert emulator.calls() == []


async def test_outlets_carry_the_manifest_and_the_cost(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    asset = Asset("segmind://campaign")
    events = OutletEventAccessors()
    await Run(batch(tmp_path, payloads(3), outlets=[asset]), make_context(outlet_events=events)).all()
    extra = events[asset].extra
    assert extra["completed"] == 3 and extra["cost"] == pytest.approx(3 * PRICE)
    assert extra["manifest"] == str(tmp_path / "out" / "manifest.json")


async def test_without_output_dir_the_urls_are_returned(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]]
) -> None:
    manifest = await Run(batch(None, payloads(3)), make_context()).all()
    assert all(e["output"].startswith("http") and e["output_uris"] == [] for e in manifest["items"].values())
    assert len(emulator.calls(endpoint="media")) == 0


class Killed(BaseException):
    """The worker dying: nothing after it runs, not even an ``except Exception``."""


class DyingStore(dict):  # type: ignore[type-arg]
    """A task_state_store whose worker is killed when it is about to remember its ``die_at``-th request
    (a single operator's, or a batch's with the group of submits that holds it: ``batch.submits``)."""

    def __init__(self, shared: Any, die_at: int) -> None:
        super().__init__()
        self.shared, self.die_at, self.writes = shared, die_at, 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.shared.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        group = value.values() if "request_id" not in value else [value]  # a batch's group of submits, or one
        records = [r for r in group if isinstance(r, dict) and "request_id" in r]
        self.writes += len(records)
        if records and self.writes >= self.die_at:
            raise Killed
        self.shared.set(key, value)


async def test_submits_a_killed_try_never_recorded_are_found_in_the_request_history(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """Killed while remembering its 15th submit, the other submits already on their way still got paid:
    the retry finds them in the account's request history (one page) instead of paying again."""
    with pytest.raises(Killed):
        batch(tmp_path, payloads(30), max_in_flight=20).execute(make_context(DyingStore(state_store, 15)))
    paid = len(emulator.requests())
    assert paid > 14  # more were paid for than remembered
    emulator.clear_calls()
    retry = await Run(batch(tmp_path, payloads(30), max_in_flight=20), make_context(state_store)).all()
    assert len(emulator.requests()) == 30 and submits(emulator) == 30 - paid
    assert retry["completed"] == 30
    assert len(emulator.calls(endpoint="history")) == 2  # one page to look, one for the costs


async def test_a_submit_whose_answer_was_lost_is_settled_by_the_history_on_retry(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    emulator.lose_answer("submit", how="drop", count=1)  # the job is made and billed, the answer lost
    with pytest.raises(SegmindBatchItemsFailedError) as raised:
        await Run(batch(tmp_path, payloads(5)), make_context(state_store)).all()
    assert "looks it up in the request history" in str(raised.value)
    assert len(emulator.requests()) == 5
    retry = await Run(batch(tmp_path, payloads(5)), make_context(state_store)).all()
    assert retry["completed"] == 5 and len(emulator.requests()) == 5  # nothing paid twice
