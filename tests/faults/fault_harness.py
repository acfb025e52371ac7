"""Run tasks the way Airflow does (execute, defer, trigger, execute_complete) and measure a scenario.

Each task is a real ``SegmindOperator``; its trigger runs on an asyncio loop shared with the other
tasks' triggers, as in a triggerer. The figures come from the emulator (jobs it accepted, its call
log) and from the destinations on disk or in the bucket, never from what the provider says of itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image

from segmind_provider.exceptions import SegmindOutputError
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"
TIME_SCALE = 0.02  # flux-1.1-pro "takes" ~0.28 s
PRECIOUS = b"an earlier file that a failed task must leave as it was"


@dataclass
class TaskRun:
    """One task instance: its operator, its context across tries, and what became of it."""

    name: str
    operator: SegmindOperator
    context: dict[str, Any]
    prompt: str
    trigger: SegmindRequestTrigger | None = None
    event: dict[str, Any] | None = None
    stage: str = "submit"  # where it ended: submit, wait, result, store, done
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    guarded: Path | str | None = None  # a destination holding PRECIOUS before the task ran

    @property
    def completed(self) -> bool:
        return self.result is not None


def make_task(
    name: str, out: Path | str, context: dict[str, Any], *, prompt: str | None = None, **kw: Any
) -> TaskRun:
    """A deferrable flux-1.1-pro task writing ``<out>/<name>.png``; its prompt identifies its jobs."""
    prompt = prompt or f"fault suite: {name}, a lighthouse at dawn"
    args: dict[str, Any] = {
        "task_id": name.replace(" ", "_"),
        "model": FLUX,
        "payload": {"prompt": prompt, "output_format": "png", "aspect_ratio": "4:3"},
        "output_path": f"{out}/{name.replace(' ', '_')}.png",
        "deferrable": True,
        "poll_interval": 0.5,
        "timeout": 60,
        "expected_duration": 14.05 * TIME_SCALE,
    }
    args.update(kw)
    return TaskRun(name, SegmindOperator(**args), context, prompt)


def guard(run: TaskRun) -> TaskRun:
    """Put an earlier file at the task's destination: a failed task must leave it untouched."""
    target = run.operator.output_path
    if str(target).startswith("memory://"):
        ObjectStoragePath(target, conn_id=run.operator.output_conn_id).write_bytes(PRECIOUS)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(PRECIOUS)
    run.guarded = target
    return run


def start(run: TaskRun) -> None:
    """The worker's part: ``execute`` until it defers, finishes, or fails."""
    try:
        run.result = run.operator.execute(run.context)
        run.stage = "done"
    except TaskDeferred as deferred:
        assert isinstance(deferred.trigger, SegmindRequestTrigger)
        assert deferred.method_name == "execute_complete"
        run.trigger, run.stage = deferred.trigger, "wait"
    except Exception as exc:
        run.error = exc


async def first_event(trigger: SegmindRequestTrigger) -> dict[str, Any]:
    """What the triggerer takes from a trigger: its first event."""
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


async def wait_all(runs: Iterable[TaskRun]) -> None:
    """The triggerer's part: every deferred task's trigger on one loop, at once."""
    waiting = [run for run in runs if run.trigger is not None and run.event is None]
    events = await asyncio.gather(*(first_event(run.trigger) for run in waiting if run.trigger))
    for run, event in zip(waiting, events, strict=True):
        run.event = event


def finish(run: TaskRun) -> None:
    """The resumed task: ``execute_complete`` with the trigger's event (none: it never deferred)."""
    if run.event is None:
        return
    try:
        run.result = run.operator.execute_complete(run.context, run.event)
        run.stage = "done"
    except SegmindOutputError as exc:
        run.error, run.stage = exc, ("store" if run.event.get("status") == "success" else "wait")
    except Exception as exc:
        run.error, run.stage = exc, ("result" if run.event.get("status") == "success" else "wait")


def run_all(runs: Sequence[TaskRun]) -> None:
    """Every task through worker, triggerer and worker again, the waits at the same time."""
    for run in runs:
        start(run)
    asyncio.run(wait_all(runs))
    for run in runs:
        finish(run)


def run_each(runs: Sequence[TaskRun]) -> None:
    """One task after another (a single flow: every request follows the previous answer)."""
    for run in runs:
        run_all([run])


# ---------------------------------------------------------------- what the suite measures


def decodes(location: Path | str, conn_id: str | None = None) -> bool:
    """True when the file at ``location`` is a whole image (Pillow decodes every pixel)."""
    try:
        if str(location).startswith("memory://"):
            import io

            handle: Any = io.BytesIO(ObjectStoragePath(str(location), conn_id=conn_id).read_bytes())
        else:
            handle = open(location, "rb")  # noqa: SIM115 - closed below
        with handle, Image.open(handle) as image:
            image.load()
        return True
    except Exception:
        return False


def _files(out: Path | str) -> list[str]:
    if str(out).startswith("memory://"):
        import fsspec

        root = str(out).removeprefix("memory:/")
        return [f"memory:/{p}" for p in fsspec.filesystem("memory").find(root)]
    return [str(p) for p in Path(out).rglob("*") if p.is_file()]


@dataclass
class Figures:
    """One scenario's row in docs/reliability.md."""

    scenario: str
    injected: str
    happened: str
    tasks: int
    jobs: int
    submit_calls: int
    completed: int
    failed_clear: int
    duplicates: int
    lost: int
    partial: int
    extra_requests: int
    calls: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


FLOOR = {"submit": 1, "wait": 2, "result": 3, "store": 4}


def measure(
    emulator: SegmindEmulator,
    runs: Sequence[TaskRun],
    outs: Sequence[Path | str],
    *,
    scenario: str,
    injected: str,
    happened: str,
    started: float,
    failures: dict[str, tuple[type[BaseException], str]] | None = None,
) -> Figures:
    """Count what the emulator and the destinations show, and check every failure is the expected one.

    ``failures`` maps a task name to the error class and a text its message must hold; every other
    task must complete. Extra requests: calls beyond the floor of a task's journey (submit, one
    status, one result, one download per stored file; less for a task that stopped earlier).
    """
    failures = failures or {}
    jobs = emulator.requests()
    calls = emulator.calls()
    by_endpoint: dict[str, int] = {}
    for call in calls:
        by_endpoint[call["endpoint"]] = by_endpoint.get(call["endpoint"], 0) + 1
    duplicates, floor, reasons, lost = 0, 0, [], 0
    failed_clear = 0
    for run in runs:
        mine = [job for job in jobs if (job.get("body") or {}).get("prompt") == run.prompt]
        duplicates += max(0, len(mine) - 1)
        if run.completed:
            assert run.name not in failures, f"{run.name} completed, expected {failures[run.name]}"
            assert run.result is not None
            uris = run.result["output_uris"]
            floor += 3 + len(uris)
            lost += sum(1 for uri in uris if not decodes(uri, run.operator.output_conn_id)) + (
                0 if uris else 1
            )
            continue
        floor += FLOOR[run.stage]
        expected = failures.get(run.name)
        assert expected is not None, f"{run.name} failed unexpectedly: {run.error!r}"
        cls, text = expected
        assert isinstance(run.error, cls) and text in str(run.error), (run.name, run.error)
        failed_clear += 1
        reasons.append(f"{run.name}: {type(run.error).__name__}: {str(run.error)[:160]}")
    partial = 0
    for out in outs:
        for location in _files(out):
            guarded = any(str(run.guarded) == location for run in runs if run.guarded is not None)
            if location.endswith(".part"):
                partial += 1
            elif guarded:
                conn = next((r.operator.output_conn_id for r in runs if str(r.guarded) == location), None)
                body = (
                    ObjectStoragePath(location, conn_id=conn).read_bytes()
                    if location.startswith("memory://")
                    else Path(location).read_bytes()
                )
                partial += 0 if body == PRECIOUS or decodes(location, conn) else 1
            elif not decodes(location):
                partial += 1
    return Figures(
        scenario=scenario,
        injected=injected,
        happened=happened,
        tasks=len(runs),
        jobs=len(jobs),
        submit_calls=by_endpoint.get("submit", 0),
        completed=sum(1 for run in runs if run.completed),
        failed_clear=failed_clear,
        duplicates=duplicates,
        lost=lost,
        partial=partial,
        extra_requests=len(calls) - floor,
        calls=dict(sorted(by_endpoint.items())),
        reasons=reasons,
        seconds=round(time.monotonic() - started, 1),
    )


def is_final(error: BaseException | None) -> bool:
    """Airflow skips the remaining retries for these."""
    return isinstance(error, AirflowFailException)
