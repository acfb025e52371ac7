"""The fault suite (issue 10): every scenario end to end through the operator and its trigger, against
the emulator in its own process.

Each scenario checks the three promises (nothing lost or half-written, no job paid twice, every
failure a clear error, final where no retry can help) and records its figures for
docs/reliability.md (``SEGMIND_FAULT_REPORT=...``, see conftest.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io.store import attach
from fault_harness import (
    PRECIOUS,
    Figures,
    TaskRun,
    finish,
    first_event,
    guard,
    is_final,
    make_task,
    measure,
    run_all,
    run_each,
    start,
    wait_all,
)
from fault_proxy import RewritingProxy
from fsspec.implementations.memory import MemoryFileSystem

from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindContentBlockedError,
    SegmindInsufficientCreditsError,
    SegmindNotFoundError,
    SegmindOutputError,
    SegmindTimeoutError,
)
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

pytestmark = pytest.mark.timeout(180)


def check(emulator: SegmindEmulator, record: Any, runs: list[TaskRun], outs: list[Any], **kw: Any) -> Figures:
    """Measure, record, and hold the three promises."""
    figures = measure(emulator, runs, outs, **kw)
    record(figures)
    assert figures.duplicates == 0, figures
    assert figures.lost == 0 and figures.partial == 0, figures
    return figures


def answered(emulator: SegmindEmulator, *codes: int) -> int:
    return sum(1 for call in emulator.calls() if call["status"] in codes)


# ---------------------------------------------------------------- the service misbehaves


def test_baseline(emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any) -> None:
    started = time.monotonic()
    runs = [make_task(f"image {i}", tmp_path, make_context()) for i in range(5)]
    run_all(runs)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="baseline", injected="nothing",
        happened="every image stored; the floor of requests per job", started=started,
    )  # fmt: skip
    assert figures.completed == 5 and figures.jobs == 5


def test_a_429_storm_on_submit_and_status(
    emulator: SegmindEmulator, proxy: RewritingProxy, make_context: Any, tmp_path: Path, record: Any
) -> None:
    """A key limited to 1 request per 3 s: every 429 carries Retry-After, and the next request comes
    after it has passed (one flow at a time, so every request follows the answer before it). One per
    window makes the storm certain however slow the machine: each request after an answer comes well
    within 3 s (two per 2 s let a loaded machine slip under the limit and never see a 429)."""
    started = time.monotonic()
    emulator.configure(rate_limit=1, rate_limit_window=3)
    runs = [
        make_task(f"storm {i}", tmp_path, make_context(), segmind_conn_id="segmind_storm") for i in range(3)
    ]
    run_each(runs)
    limited = [seen for seen in proxy.seen if seen.status == 429]
    assert {seen.method for seen in limited} == {"POST", "GET"}, "the storm hit submits and polls"
    early = 0
    for seen in limited:
        assert seen.retry_after is not None
        after = [n.arrived for n in proxy.seen if n.arrived > seen.answered]
        if after and min(after) < seen.answered + float(seen.retry_after):
            early += 1
    figures = check(
        emulator, record, runs, [tmp_path], scenario="429 storm on submit and status",
        injected="rate limit 1 request / 3 s (`configure(rate_limit=1, rate_limit_window=3)`), the "
        "client's budget set to 600 a minute",
        happened=f"{len(limited)} answers 429 with Retry-After, {early} requests before it had passed; "
        "all stored", started=started,
    )  # fmt: skip
    assert early == 0 and figures.completed == 3


def test_a_third_of_status_and_result_calls_answer_502_or_504(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    emulator.add_fault("status", status=502, probability=0.3)
    emulator.add_fault("result", status=504, probability=0.3)
    runs = [make_task(f"gateway {i}", tmp_path, make_context()) for i in range(5)]
    run_all(runs)
    gateway = answered(emulator, 502, 504)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="30 % of status and result calls 502/504",
        injected="`add_fault('status', status=502, probability=0.3)`, same for result with 504",
        happened=f"{gateway} gateway errors retried; all stored", started=started,
    )  # fmt: skip
    assert gateway > 0 and figures.completed == 5


def test_dropped_connections(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    emulator.add_fault("status", kind="drop", probability=0.3)
    emulator.add_fault("result", kind="drop", count=2)
    emulator.add_fault("media", kind="drop", count=2)
    runs = [make_task(f"dropped {i}", tmp_path, make_context()) for i in range(4)]
    run_all(runs)
    dropped = answered(emulator, 0)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="dropped connections",
        injected="30 % of status calls, 2 result calls and 2 downloads closed unanswered",
        happened=f"{dropped} connections dropped, each retried; all stored", started=started,
    )  # fmt: skip
    assert dropped >= 4 and figures.completed == 4


def test_answers_slower_than_the_read_timeout(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    for endpoint, count in (("status", 2), ("result", 1), ("media", 1)):
        emulator.add_fault(endpoint, kind="delay", delay=2.0, count=count)
    runs = [
        make_task(f"slow {i}", tmp_path, make_context(), segmind_conn_id="segmind_slow") for i in range(3)
    ]
    run_all(runs)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="answers slower than the read timeout",
        injected="read timeout 1 s; 2 status, 1 result and 1 download answered after 2 s",
        happened="each timed out and was asked again; all stored", started=started,
    )  # fmt: skip
    assert figures.completed == 3


def test_a_lost_submit_answer_is_found_in_the_request_history(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    """The submit made (and billed) the job, then its answer was lost: dropped, or never sent."""
    started = time.monotonic()
    dropped = make_task("answer dropped", tmp_path, make_context())
    hung = make_task("answer never sent", tmp_path, make_context(), segmind_conn_id="segmind_slow")
    emulator.lose_answer("submit", how="drop")
    start(dropped)
    emulator.lose_answer("submit", how="hang", hold=3.0)
    start(hung)
    asyncio.run(wait_all([dropped, hung]))
    finish(dropped)
    finish(hung)
    history = len(emulator.calls(endpoint="history"))
    figures = check(
        emulator, record, [dropped, hung], [tmp_path], scenario="submit answer lost",
        injected="`lose_answer('submit', how='drop')`; `how='hang'` past a 1 s read timeout",
        happened=f"both jobs found in the request history ({history} history calls) and re-attached",
        started=started,
    )  # fmt: skip
    assert figures.completed == 2 and figures.jobs == 2 and figures.submit_calls == 2


def test_malformed_answers(
    emulator: SegmindEmulator, proxy: RewritingProxy, make_context: Any, tmp_path: Path, record: Any
) -> None:
    """Non-JSON 2xx, a submit answer without request_id, a status nobody knows: the tasks that can
    finish do, the one that cannot fails clearly, and the shared trigger loop never stops."""
    started = time.monotonic()
    garbled = make_task("non-JSON submit answer", tmp_path, make_context())
    no_id = make_task("no request_id", tmp_path, make_context(), segmind_conn_id="segmind_proxy")
    polled = make_task("non-JSON status answers", tmp_path, make_context())
    unknown = make_task("unknown status twice", tmp_path, make_context(), segmind_conn_id="segmind_proxy")
    forever = make_task(
        "unknown status forever", tmp_path, make_context(), segmind_conn_id="segmind_proxy", timeout=3
    )
    emulator.add_fault("submit", kind="corrupt", count=1)
    start(garbled)
    proxy.rewrite("POST", r"^/v2/", lambda answer: {k: v for k, v in answer.items() if k != "request_id"})
    start(no_id)
    for run in (polled, unknown, forever):
        start(run)
    emulator.add_fault("status", kind="corrupt", count=2)
    for run, times in ((unknown, 2), (forever, 10_000)):
        assert run.trigger is not None
        pattern = f"/{run.trigger.request_id}/status$"
        proxy.rewrite("GET", pattern, lambda answer: {**answer, "status": "WARMING_UP"}, count=times)
    runs = [garbled, no_id, polled, unknown, forever]
    asyncio.run(wait_all(runs))  # one loop for all: an exception in any trigger would end it
    for run in runs:
        finish(run)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="malformed answers",
        injected="non-JSON submit (`kind='corrupt'`) and status answers; a submit answer without "
        "request_id and a status `WARMING_UP` (rewriting proxy)",
        happened="lost ids found in the history; garbled polls retried; an unknown status is waited "
        "on, and named when the deadline passes", started=started,
        failures={"unknown status forever": (SegmindTimeoutError, "WARMING_UP")},
    )  # fmt: skip
    assert figures.completed == 4 and figures.jobs == 5


# ---------------------------------------------------------------- the triggerer and the worker misbehave


def test_a_trigger_cancelled_and_rebuilt_mid_wait(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    """A triggerer restart: the running trigger is cancelled after its first poll, and one rebuilt
    from its stored kwargs finishes the wait (same request, same deadline)."""
    started = time.monotonic()
    emulator.configure(time_scale=1.0)  # ~14 s a job, told to the schedule as 0.3 s: it polls early
    runs = [make_task(f"restart {i}", tmp_path, make_context(), expected_duration=0.3) for i in range(2)]
    for run in runs:
        start(run)
    triggers = [run.trigger for run in runs if run.trigger is not None]
    ids = [trigger.request_id for trigger in triggers]

    async def restart() -> list[dict[str, Any]]:
        first = [asyncio.create_task(first_event(trigger)) for trigger in triggers]
        while True:  # until each trigger has polled once
            polled = " ".join(c["path"] for c in await asyncio.to_thread(emulator.calls, "status"))
            if all(request_id in polled for request_id in ids):
                break
            await asyncio.sleep(0.05)
        for task in first:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        jobs = await asyncio.to_thread(emulator.requests)
        at_cancel.extend(job["status"] for job in jobs)
        await asyncio.to_thread(emulator.advance, 30)  # the jobs finish while no trigger runs
        rebuilt = [SegmindRequestTrigger(**trigger.serialize()[1]) for trigger in triggers]
        return list(await asyncio.gather(*(first_event(trigger) for trigger in rebuilt)))

    at_cancel: list[str] = []
    for run, event in zip(runs, asyncio.run(restart()), strict=True):
        run.event = event
        finish(run)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="trigger cancelled and rebuilt mid-wait",
        injected="each trigger cancelled after its first poll, rebuilt from its serialized kwargs",
        happened="the rebuilt triggers re-polled the same requests; no submit from a trigger",
        started=started,
    )  # fmt: skip
    assert at_cancel == ["PENDING", "PENDING"] and figures.jobs == 2 and figures.completed == 2


def test_two_copies_of_one_trigger_at_once(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    """Two triggerers running the same trigger (HA): both only read; the task resumes once."""
    started = time.monotonic()
    runs = [make_task(f"twin {i}", tmp_path, make_context()) for i in range(2)]
    for run in runs:
        start(run)

    async def twins(run: TaskRun) -> list[dict[str, Any]]:
        assert run.trigger is not None
        _, kwargs = run.trigger.serialize()
        copies = [SegmindRequestTrigger(**kwargs), SegmindRequestTrigger(**kwargs)]
        return list(await asyncio.gather(*(first_event(copy) for copy in copies)))

    async def all_twins() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(twins(run) for run in runs)))

    for run, events in zip(runs, asyncio.run(all_twins()), strict=True):
        assert [e["status"] for e in events] == ["success", "success"]
        assert events[0]["request_id"] == events[1]["request_id"]
        run.event = events[0]  # Airflow resumes the task with the first event; the other finds it gone
        finish(run)
    stored = sorted(p.name for p in tmp_path.iterdir())
    figures = check(
        emulator, record, runs, [tmp_path], scenario="two copies of one trigger at once",
        injected="every trigger run twice at the same time",
        happened=f"both copies saw the same request finish; {len(stored)} stored images for 2 tasks",
        started=started,
    )  # fmt: skip
    assert stored == ["twin_0.png", "twin_1.png"] and figures.jobs == 2


class WorkerLost(BaseException):
    """The worker process died (SIGKILL, OOM): nothing after this line of the try ran."""


class DyingTaskInstance:
    """A task instance whose worker dies at the operator's first XCom push, right after the submit."""

    try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        raise WorkerLost(key)


class DyingStore:
    """A task_state_store whose worker dies as the request id is being stored (the submit's start,
    written before the submit, is kept)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get(self, key: str, default: Any = None) -> Any:
        return self.inner.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        if "request_id" in value:
            raise WorkerLost(key)
        self.inner.set(key, value)


def test_a_worker_lost_between_submit_and_defer_then_retried(
    emulator: SegmindEmulator, make_context: Any, state_store: Any, tmp_path: Path, record: Any
) -> None:
    """Try 1 submits and its worker dies before deferring; try 2 must not pay again: through the
    task_state_store, or (id never stored, or Airflow 3.2 without a store) the request history."""
    started = time.monotonic()
    new_store = type(state_store)  # one task_state_store per task, kept across its tries
    stored, unstored = new_store(), new_store()
    first_tries: dict[str, tuple[Any, Any]] = {
        "after storing the id": (stored, stored),
        "before storing the id": (DyingStore(unstored), unstored),
        "no task_state_store": (None, None),
    }
    runs = []
    for name, (first_store, retry_store) in first_tries.items():
        context: dict[str, Any] = {"ti": DyingTaskInstance()}
        if first_store is not None:
            context["task_state_store"] = first_store
        with pytest.raises(WorkerLost):
            make_task(f"lost {name}", tmp_path, context).operator.execute(context)
        runs.append(make_task(f"lost {name}", tmp_path, make_context(retry_store, try_number=2)))
    run_all(runs)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="worker lost between submit and defer, retried",
        injected="try 1's worker dies after the submit: after storing the id, before it, and with "
        "no task_state_store (Airflow 3.2)",
        happened="each try 2 re-attached (the store once, the request history twice); one job per task",
        started=started,
    )  # fmt: skip
    assert figures.jobs == 3 and figures.submit_calls == 3 and figures.completed == 3


# ---------------------------------------------------------------- final failures


def test_results_expired_before_they_were_fetched(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    done = guard(make_task("expired after completion", tmp_path, make_context()))
    waiting = guard(make_task("expired while waiting", tmp_path, make_context()))
    start(done)
    start(waiting)
    assert done.trigger is not None and waiting.trigger is not None
    emulator.expire(waiting.trigger.request_id)
    asyncio.run(wait_all([done, waiting]))
    emulator.expire(done.trigger.request_id)
    finish(done)
    finish(waiting)
    figures = check(
        emulator, record, [done, waiting], [tmp_path], scenario="results expired (404) before fetched",
        injected="`expire(request_id)` while waiting, and after completion before the result call",
        happened="each failed naming its request; no second submit", started=started,
        failures={
            "expired after completion": (SegmindNotFoundError, done.trigger.request_id),
            "expired while waiting": (SegmindNotFoundError, waiting.trigger.request_id),
        },
    )  # fmt: skip
    assert figures.submit_calls == 2 and figures.jobs == 2


def test_credits_key_and_content_block_fail_at_once_without_retries(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    broke = guard(make_task("no credits", tmp_path, make_context()))
    bad_key = guard(make_task("bad key", tmp_path, make_context(), segmind_conn_id="segmind_bad_key"))
    blocked = guard(make_task("content block", tmp_path, make_context(), prompt="a forbidden castle at dusk"))
    emulator.configure(credits=0)
    start(broke)
    emulator.configure(credits=None, blocked_words=["forbidden"])
    runs = [broke, bad_key, blocked]
    run_all(runs[1:])
    figures = check(
        emulator, record, runs, [tmp_path], scenario="406 credits, 401 key, content block",
        injected="`configure(credits=0)`; a key the emulator refuses; `blocked_words=['forbidden']`",
        happened="each failed at once with the reason, as an AirflowFailException (no retry)",
        started=started,
        failures={
            "no credits": (SegmindInsufficientCreditsError, "credits"),
            "bad key": (SegmindAuthError, "segmind_bad_key"),
            "content block": (SegmindContentBlockedError, "forbidden"),
        },
    )  # fmt: skip
    assert all(is_final(run.error) for run in runs)
    assert figures.jobs == 1  # only the blocked one reached Segmind's queue


# ---------------------------------------------------------------- outputs


def test_downloads_cut_short_corrupted_or_too_large(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    cut = make_task("cut short once", tmp_path, make_context())
    corrupt_once = make_task("corrupted once", tmp_path, make_context())
    corrupt_twice = guard(make_task("corrupted twice", tmp_path, make_context()))
    too_big = guard(make_task("over the size cap", tmp_path, make_context(), max_output_bytes=2000))
    runs = [cut, corrupt_once, corrupt_twice, too_big]
    for run in runs:
        start(run)
    asyncio.run(wait_all(runs))
    for run, fault in (
        (cut, ("truncate", 1)),
        (corrupt_once, ("corrupt", 1)),
        (corrupt_twice, ("corrupt", 2)),
    ):
        emulator.add_fault("media", kind=fault[0], count=fault[1])
        finish(run)
    finish(too_big)
    figures = check(
        emulator, record, runs, [tmp_path], scenario="downloads cut short, corrupted, too large",
        injected="media `kind='truncate'` once, `kind='corrupt'` once and twice (full Content-Length, "
        "valid PNG header); a 2,000-byte cap",
        happened="cut and corrupted-once downloads fetched again and stored whole; the rest refused, "
        "the earlier file left as it was", started=started,
        failures={
            "corrupted twice": (SegmindOutputError, "broken png file (2 downloads)"),
            "over the size cap": (SegmindOutputError, "over the limit of 2000"),
        },
    )  # fmt: skip
    assert figures.completed == 2


class FailingBucket(MemoryFileSystem):
    """An object store whose uploads break halfway: part of the object is written, then an error."""

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        data = Path(lpath).read_bytes()
        self.pipe_file(rpath, data[: len(data) // 2])
        raise OSError("connection to the bucket reset mid-upload")


def _finish_in_child(run: TaskRun, limit: int, pipe: Any) -> None:
    """A worker whose disk fills up: files may grow to ``limit`` bytes, then every write fails."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    finish(run)
    pipe.send((run.result, run.error, run.stage))


def test_the_disk_or_the_bucket_failing_mid_write(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, record: Any
) -> None:
    started = time.monotonic()
    attach("memory", conn_id="segmind_failing_bucket", fs=FailingBucket(skip_instance_cache=True))
    bucket = f"memory://fault-bucket-{uuid.uuid4().hex[:8]}"
    disk = make_task("disk full", tmp_path, make_context())
    cloud = make_task(
        "bucket fails", bucket, make_context(), output_conn_id="segmind_failing_bucket"
    )  # fmt: skip
    runs = [guard(disk), guard(cloud)]
    for run in runs:
        start(run)
    asyncio.run(wait_all(runs))
    finish(cloud)
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=_finish_in_child, args=(disk, 4096, send))
    child.start()
    disk.result, disk.error, disk.stage = receive.recv()
    child.join(30)
    figures = check(
        emulator, record, runs, [tmp_path, bucket], scenario="disk or bucket failing mid-write",
        injected="the worker's file size limit (RLIMIT_FSIZE, 4 KiB) mid-download; an fsspec bucket "
        "whose upload writes half the object then fails",
        happened="both failed naming the write; the earlier file and object left as they were, no "
        "temporary file or key left", started=started,
        failures={
            "disk full": (SegmindOutputError, "File too large"),
            "bucket fails": (SegmindOutputError, "mid-upload"),
        },
    )  # fmt: skip
    assert ObjectStoragePath(str(cloud.guarded)).read_bytes() == PRECIOUS
    assert Path(str(disk.guarded)).read_bytes() == PRECIOUS
    assert figures.failed_clear == 2
