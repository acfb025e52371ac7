"""SegmindRequestTrigger against the real emulator on loopback (100x time scale), plus its pure decisions."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import BaseTrigger, TriggerEvent

from segmind_provider.durations import DurationObserver
from segmind_provider.events import make_event, raise_for_event
from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindRateLimitError,
    SegmindRequestFailedError,
    SegmindServerError,
)
from segmind_provider.hooks.budget import Priority, RequestBudget
from segmind_provider.hooks.errors import failure_error
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.runtime import process_state, reset_process_state
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger
from segmind_provider.triggers.watch import RequestWatch

FLUX = "flux-1.1-pro"
PAYLOAD = {"prompt": "a lighthouse at dawn", "output_format": "png"}
EVENT_KEYS = {"status", "request_id", "message", "inference_time", "polls"}


def submit(payload: dict[str, Any] | None = None) -> tuple[str, float]:
    submitted_at = time.time()
    answer = SegmindHook().submit(FLUX, payload or PAYLOAD)
    return answer["request_id"], submitted_at


def trigger_for(request_id: str, submitted_at: float, **kw: Any) -> SegmindRequestTrigger:
    args: dict[str, Any] = {
        "poll_interval": 0.2,
        "end_time": time.time() + 30,
        "model": FLUX,
        "submitted_at": submitted_at,
        "expected_duration": 0.14,
    }
    args.update(kw)
    return SegmindRequestTrigger(request_id, "segmind_default", **args)


async def events_of(trigger: SegmindRequestTrigger) -> list[dict[str, Any]]:
    events = [e async for e in trigger.run()]
    assert all(isinstance(e, TriggerEvent) for e in events)
    return [e.payload for e in events]


# ---------------------------------------------------------------- serialization


def test_serialize_round_trips_with_ids_and_numbers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-key-123456"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps({"conn_type": "segmind", "password": secret})
    )
    trigger = SegmindRequestTrigger(
        "req-1", "segmind_default", 2.5, 1_900_000_000.0, model=FLUX, submitted_at=1_899_999_990.0
    )
    path, kwargs = trigger.serialize()
    assert path == "segmind_provider.triggers.segmind.SegmindRequestTrigger"
    rebuilt = import_string(path)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    text = json.dumps(kwargs)  # plain JSON, as the metadata database stores it
    assert secret not in text and secret not in repr(trigger)
    assert all(isinstance(v, (str, int, float, type(None))) for v in kwargs.values())
    assert kwargs["end_time"] == 1_900_000_000.0 and kwargs["submitted_at"] == 1_899_999_990.0


def test_defaults_give_an_absolute_deadline() -> None:
    before = time.time()
    trigger = SegmindRequestTrigger("req-1", "segmind_default")
    assert trigger.end_time >= before + 600 and trigger.submitted_at >= before


# ---------------------------------------------------------------- each event kind, real HTTP


async def test_success_event_reads_status_only(emulator: SegmindEmulator) -> None:
    request_id, submitted_at = submit()
    emulator.clear_calls()
    (event,) = await events_of(trigger_for(request_id, submitted_at))
    assert set(event) == EVENT_KEYS
    assert event["status"] == "success" and event["request_id"] == request_id
    assert event["inference_time"] and event["polls"] >= 1
    calls = emulator.calls()
    assert {c["endpoint"] for c in calls} == {"status"}  # read-only: no submit, no result
    assert len(calls) == event["polls"]
    assert process_state().durations.estimate(FLUX) is not None  # learned for the next wait


@pytest.mark.segmind_emulator(blocked_words=["forbidden"])
async def test_failed_event_carries_the_api_reason(emulator: SegmindEmulator) -> None:
    request_id, submitted_at = submit({"prompt": "a forbidden castle"})
    (event,) = await events_of(trigger_for(request_id, submitted_at))
    assert event["status"] == "failed" and event["request_id"] == request_id
    assert "forbidden" in event["message"]
    assert isinstance(failure_error(request_id, event["message"]), SegmindContentBlockedError)


@pytest.mark.segmind_emulator(time_scale=1.0)
async def test_timeout_event_names_the_request(emulator: SegmindEmulator) -> None:
    request_id, submitted_at = submit()  # a real-time 14 s job
    end_time = time.time() + 0.3
    (event,) = await events_of(trigger_for(request_id, submitted_at, end_time=end_time))
    assert time.time() >= end_time
    assert event["status"] == "timeout" and request_id in event["message"]


async def test_unknown_request_is_an_error_event(emulator: SegmindEmulator) -> None:
    trigger = trigger_for("00000000-0000-0000-0000-000000000000", time.time() - 1)
    (event,) = await events_of(trigger)
    assert event["status"] == "error" and "00000000" in event["message"]


async def test_missing_key_is_an_error_event(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id, submitted_at = submit()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_NOKEY", json.dumps({"conn_type": "segmind", "host": emulator.base_url})
    )
    trigger = SegmindRequestTrigger(
        request_id, "segmind_nokey", 0.2, time.time() + 30, submitted_at=submitted_at
    )
    (event,) = await events_of(trigger)  # refused before any request, not retried
    assert event["status"] == "error" and "API key" in event["message"]


async def test_a_short_run_of_server_errors_is_waited_out(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_NORETRY", _no_retry_conn(emulator))
    request_id, submitted_at = submit()
    emulator.add_fault("status", status=503, count=2)
    trigger = SegmindRequestTrigger(
        request_id,
        "segmind_noretry",
        0.2,
        time.time() + 30,
        model=FLUX,
        submitted_at=submitted_at,
        expected_duration=0.14,
    )
    (event,) = await events_of(trigger)
    assert event["status"] == "success" and event["polls"] >= 3


async def test_a_long_run_of_server_errors_ends_in_an_error_event(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_NORETRY", _no_retry_conn(emulator))
    request_id, submitted_at = submit()
    emulator.add_fault("status", status=500)
    trigger = SegmindRequestTrigger(
        request_id,
        "segmind_noretry",
        0.1,
        time.time() + 30,
        model=FLUX,
        submitted_at=submitted_at,
        expected_duration=0.01,
        max_consecutive_errors=2,
    )
    (event,) = await events_of(trigger)
    assert event["status"] == "error" and event["polls"] == 3 and "3 times" in event["message"]


def _no_retry_conn(emulator: SegmindEmulator) -> str:
    conn = json.loads(emulator.connection_json())
    conn["extra"] = {"max_retries": 0}
    return json.dumps(conn)


# ---------------------------------------------------------------- restarts


@pytest.mark.segmind_emulator(time_scale=1.0)
async def test_rebuilt_trigger_keeps_the_original_deadline(emulator: SegmindEmulator) -> None:
    request_id, submitted_at = submit()
    original = trigger_for(request_id, submitted_at, end_time=time.time() + 0.5, expected_duration=None)
    task = asyncio.create_task(events_of(original))
    await asyncio.sleep(0.1)
    task.cancel()  # the triggerer went away mid-wait
    with pytest.raises(asyncio.CancelledError):
        await task
    path, kwargs = original.serialize()
    await asyncio.sleep(0.1)
    rebuilt = import_string(path)(**kwargs)
    assert rebuilt.end_time == original.end_time and rebuilt.submitted_at == submitted_at
    (event,) = await events_of(rebuilt)
    # flux's first poll would be ~13 s after submit: the rebuilt trigger stopped at the original
    # deadline (0.5 s after submit), not at a fresh one
    assert event["status"] == "timeout" and time.time() >= original.end_time


async def test_rebuilt_trigger_resumes_and_finishes(emulator: SegmindEmulator) -> None:
    request_id, submitted_at = submit()
    original = trigger_for(request_id, submitted_at, expected_duration=30.0)  # first poll far away
    task = asyncio.create_task(events_of(original))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, kwargs = original.serialize()
    kwargs["expected_duration"] = 0.14
    (event,) = await events_of(SegmindRequestTrigger(**kwargs))
    assert event["status"] == "success" and event["request_id"] == request_id


async def test_many_triggers_share_one_loop(emulator: SegmindEmulator) -> None:
    jobs = [submit() for _ in range(20)]
    results = await asyncio.gather(*(events_of(trigger_for(rid, at)) for rid, at in jobs))
    assert sorted(r[0]["request_id"] for r in results) == sorted(rid for rid, _ in jobs)
    assert all(r[0]["status"] == "success" for r in results)


@pytest.mark.segmind_emulator(time_scale=0.05)  # flux takes 0.6 to 0.81 s
async def test_on_a_saturated_key_the_trigger_polls_once_a_job(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: where the key's budget is saturated (a worker submits as fast as the key allows), a poll
    takes a submit's place, so each wait polls once, past the high end of its job's range, rather than
    near its likely end and again (about two polls a job on this schedule with tokens to spare)."""
    connection = json.loads(emulator.connection_json())
    connection["extra"] = {**connection.get("extra", {}), "requests_per_minute": 3000}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(connection))
    budget = process_state().budget(SegmindHook().get_settings())
    jobs = [submit() for _ in range(6)]
    for _ in range(60):  # more than the 60-token burst: the last submits wait for tokens
        budget.acquire(Priority.SUBMIT)
    emulator.clear_calls()
    results = await asyncio.gather(
        *(events_of(trigger_for(rid, at, expected_duration=0.7, poll_interval=0.5)) for rid, at in jobs)
    )
    assert all(r[0]["status"] == "success" for r in results)
    assert [r[0]["polls"] for r in results] == [1] * len(jobs)
    assert len(emulator.calls(endpoint="status")) == len(jobs)


async def test_on_kill_says_segmind_cannot_cancel_and_cleanup_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trigger = SegmindRequestTrigger("req-9", "segmind_default")
    caplog.set_level("WARNING", logger="segmind_provider.triggers.segmind")
    await trigger.on_kill()
    await trigger.cleanup()
    said = [r.getMessage() for r in caplog.records]
    assert said and "no cancel" in said[0] and "req-9" in said[0]


# ---------------------------------------------------------------- pure decisions


def watch(**kw: Any) -> RequestWatch:
    args: dict[str, Any] = {
        "request_id": "r",
        "model": FLUX,
        "poll_interval": 5.0,
        "end_time": 100.0,
        "submitted_at": 0.0,
        "rng": random.Random(0),
        "observer": DurationObserver(),
    }
    args.update(kw)
    return RequestWatch(**args)


def first_poll_at(w: RequestWatch, now: float) -> float:
    """When the wait first polls, driven as the trigger drives it (``wake`` after each sleep)."""
    at = now + w.start(now)
    while (more := w.wake(at)) > 0:
        at += more
    return at


def test_watch_polls_near_the_likely_end_with_tokens_to_spare_and_past_the_high_end_when_saturated() -> None:
    """Issue 22: the schedule asks the key's budget. With tokens to spare (or no limit) the first poll goes
    where the job's range begins, for a prompt notice; once requests wait for tokens, past its high
    end (about one poll a job), for a wait already asleep too."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    budget = RequestBudget("k", 3000, clock=lambda: clock[0], sleep=sleep)  # a burst of 60 tokens
    unlimited = RequestBudget("u")
    estimate = watch().schedule.estimate
    assert estimate is not None
    gap = watch().schedule.gap
    assert first_poll_at(watch(budget=unlimited, end_time=1e9), 0.0) <= estimate.low + gap
    assert first_poll_at(watch(budget=budget, end_time=1e9), 0.0) <= estimate.low + gap
    asleep = watch(budget=budget, end_time=1e9)
    woken_at = asleep.start(0.0)
    while not budget.saturated():
        budget.acquire(Priority.SUBMIT)
    assert woken_at + asleep.wake(woken_at) > estimate.high
    assert first_poll_at(watch(budget=budget, end_time=1e9), 0.0) > estimate.high
    assert first_poll_at(watch(budget=unlimited, end_time=1e9), 0.0) <= estimate.low + gap


def test_watch_honours_retry_after() -> None:
    w = watch()
    delay = w.on_error(SegmindRateLimitError("slow down", retry_after=7.0), 20.0)
    assert delay == 7.0
    again = w.on_error(SegmindServerError("oops", status_code=502), 21.0)
    assert isinstance(again, float) and again < 5.0


def test_watch_clamps_sleeps_to_the_deadline_then_times_out() -> None:
    w = watch(end_time=20.0)
    assert w.on_error(SegmindRateLimitError("slow down", retry_after=60.0), 19.0) == 1.0
    event = w.on_status({"status": "PROCESSING"}, 20.0)
    assert isinstance(event, dict) and event["status"] == "timeout" and "PROCESSING" in event["message"]


def test_watch_first_poll_never_beyond_the_deadline() -> None:
    assert watch(end_time=3.0).start(0.0) == 3.0


def test_watch_non_transient_error_ends_at_once() -> None:
    event = watch().on_error(SegmindAuthError("HTTP 401: bad key"), 1.0)
    assert isinstance(event, dict) and event["status"] == "error" and "SegmindAuthError" in event["message"]
    assert event["error_class"] == "SegmindAuthError"


def test_error_event_raises_the_same_kind_so_a_bad_key_stops_retries() -> None:
    event = watch().on_error(SegmindAuthError("HTTP 401: bad key"), 1.0)
    with pytest.raises(SegmindAuthError) as raised:
        raise_for_event(event)
    assert isinstance(raised.value, AirflowFailException) and raised.value.request_id == event["request_id"]


def test_error_event_naming_no_segmind_error_raises_the_base() -> None:
    event = make_event("error", "r", "boom", error_class="SystemExit")
    with pytest.raises(SegmindError) as raised:
        raise_for_event(event)
    assert type(raised.value) is SegmindError


def test_failure_error_classifies() -> None:
    assert type(failure_error("r", "GPU fell over")) is SegmindRequestFailedError
    assert isinstance(failure_error("r", "NSFW content detected"), SegmindContentBlockedError)


def test_make_event_refuses_unknown_kinds() -> None:
    assert set(make_event("success", "r", "ok")) == EVENT_KEYS
    with pytest.raises(ValueError):
        make_event("done", "r", "?")


class _SleepOnlyTrigger(BaseTrigger):
    """The least a trigger can be: it sleeps, then fires. The yardstick for the count below."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{__name__}._SleepOnlyTrigger", {})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(900)
        yield TriggerEvent({})


async def test_a_waiting_trigger_holds_few_objects() -> None:
    """A triggerer holds thousands of waits, and every full garbage-collector pass walks each
    one's container objects (docs/benchmarks.md). Counted the triggerer's way (one task per
    trigger, iterating ``run()``) beside a trigger that only sleeps, so the task, its context and
    the sleep's own objects (this Python's) cancel out: what is left is the trigger's watch and
    poll schedule. A log line at the start, which makes the trigger's logger and holds it for
    the whole wait, already fails this (about 3 more objects a wait).

    The count is of every object the process holds, so objects made or freed elsewhere meanwhile
    move it (once a bare-sleep count of 14.5 against the usual 15.0 failed a CI run). Hence many
    waits per count (the noise is spread over them), each of our counts set against the larger of
    the bare-sleep counts either side of it, and the median of three such rounds.
    """
    import gc

    waits, rounds = 1000, 3
    now = time.time()
    tasks: list[asyncio.Task[None]] = []

    async def run_trigger(trigger: BaseTrigger) -> None:
        async for _ in trigger.run():
            pass

    async def objects_added(make: Callable[[int], BaseTrigger]) -> float:
        gc.collect()
        before = len(gc.get_objects())
        tasks.extend(asyncio.create_task(run_trigger(make(i))) for i in range(waits))
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        return (len(gc.get_objects()) - before) / waits

    def ours(i: int) -> BaseTrigger:
        return SegmindRequestTrigger(
            f"req-{i}", "segmind_default", end_time=now + 900, model=FLUX, submitted_at=now
        )

    bare: list[float] = []
    extra: list[float] = []
    try:
        bare.append(await objects_added(lambda i: _SleepOnlyTrigger()))
        for _ in range(rounds):
            counted = await objects_added(ours)
            bare.append(await objects_added(lambda i: _SleepOnlyTrigger()))
            extra.append(counted - max(bare[-2:]))
        assert not any(task.done() for task in tasks)  # all of them waiting while counted
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(extra)[rounds // 2] <= 2.5, (
        f"{extra} objects per waiting trigger beyond a bare sleep ({bare})"
    )


# ---------------------------------------------------------------- what the trigger says


@pytest.mark.segmind_emulator(workers=1, time_scale=0.02)
async def test_the_trigger_log_follows_queued_processing_completed(
    emulator: SegmindEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """One busy worker: QUEUED behind another job, then PROCESSING, then COMPLETED, each said once."""
    caplog.set_level("INFO", logger="segmind_provider.triggers.segmind")
    submit()  # occupies the only worker for ~0.28 s
    request_id, submitted_at = submit()
    (event,) = await events_of(trigger_for(request_id, submitted_at, poll_interval=0.05))
    assert event["status"] == "success"
    lines = [r.getMessage() for r in caplog.records if r.name == "segmind_provider.triggers.segmind"]
    assert all(request_id in line for line in lines), lines
    said = [
        status
        for line in lines
        for status in ("QUEUED", "PROCESSING", "COMPLETED")
        if f": {status} (" in line
    ]
    assert said == ["QUEUED", "PROCESSING", "COMPLETED"], lines
    assert event["polls"] > len(lines)  # a line per change, not per poll
    assert (
        ": COMPLETED (" in lines[-1] and "success after" in lines[-1]
    )  # the last change and the outcome share a line


async def test_a_changed_connection_reaches_a_running_trigger_within_a_minute(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotate the key (a real connection change, and the old key revoked) while a trigger waits: its
    polls carry the new key once the process's one-minute settings lifetime has passed (a virtual
    clock jumps that minute). Had a poll kept the old key, the wait would end in an auth error."""
    clock = [0.0]
    reset_process_state(clock=lambda: clock[0])
    emulator.configure(time_scale=0.05)  # flux takes ~0.7 s
    request_id, submitted_at = submit()
    new_key = "sk-rotated-key-0001"
    trigger = trigger_for(request_id, submitted_at, expected_duration=0.0, poll_interval=0.05)
    before = len(emulator.calls(endpoint="status"))

    async def rotate() -> None:
        while len(emulator.calls(endpoint="status")) == before:  # the trigger is polling with the old key
            await asyncio.sleep(0.01)
        connection = json.loads(emulator.connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps({**connection, "password": new_key}))
        emulator.configure(api_keys=[new_key])
        clock[0] += 60.0

    rotation = asyncio.create_task(rotate())
    (event,) = await events_of(trigger)
    await rotation
    assert event["status"] == "success", event
    statuses = [c["status"] for c in emulator.calls(endpoint="status")[before:]]
    assert statuses[-1] == 200 and 401 not in statuses
