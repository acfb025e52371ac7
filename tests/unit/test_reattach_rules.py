"""Issue 21, cases 1, 2, 7, 12 and 13: re-attach only to our own request, never pay twice for a live one.

Through the real SegmindOperator / SegmindBatchOperator and hook over HTTP to the emulator on loopback;
each case's condition is an emulator knob (``live_status``, ``history_page_cap``, ``null_output_error``)
or a fault. Sleeps of the history wait and of retry back-offs are recorded, not slept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

# The helpers of the durable and batch tests (tests/unit is on sys.path: pytest's rootdir import mode).
from test_batch import PRICE, SMALL, DyingStore, Killed, Run, batch, payloads
from test_durable import FLUX, count, defer, operator

from segmind_provider.durable import STATE_STORE_KEY
from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindContentBlockedError,
    SegmindRateLimitError,
    SegmindRequestFailedError,
    SegmindSubmitUncertainError,
    SegmindTransportError,
)
from segmind_provider.hooks import errors
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.runtime import reset_process_state
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.testing.emulator.runner import SegmindEmulator


@pytest.fixture
def pauses() -> list[float]:
    """Sleeps of the history wait and of retry back-offs, recorded instead of slept."""
    recorded: list[float] = []
    reset_process_state(sleep=recorded.append)
    return recorded


def said(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged (Airflow's task logger writes to stdout, the rest goes through logging)."""
    return caplog.text + "".join(capsys.readouterr())


# ---------------------------------------------------------------- case 1: an unknown live status


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"status": "completed"}, RequestStatus.COMPLETED),
        ({"status": " FAILED "}, RequestStatus.FAILED),
        ({"status": "IN_PROGRESS"}, RequestStatus.UNKNOWN),
        ({}, RequestStatus.UNKNOWN),
        ({"model_status": "PENDING"}, RequestStatus.UNKNOWN),
    ],
)
def test_only_completed_and_failed_end_a_request(answer: dict[str, Any], status: RequestStatus) -> None:
    field = "model_status" if "model_status" in answer else "status"
    assert read_status(answer, field) is status
    assert status.is_terminal is (status in (RequestStatus.COMPLETED, RequestStatus.FAILED))


@pytest.mark.segmind_emulator(time_scale=1.0, live_status="IN_PROGRESS")
def test_a_retry_reattaches_to_a_live_job_whose_status_it_does_not_know(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    first = defer(operator(), make_context(state_store))
    assert SegmindHook().get_status(first.request_id)["status"] == "IN_PROGRESS"
    second = defer(operator(), make_context(state_store, try_number=2))  # the timeout passed: a retry
    assert second.request_id == first.request_id
    assert len(emulator.requests()) == 1 and count(emulator, "submit") == 1


@pytest.mark.segmind_emulator(time_scale=1.0, live_status="IN_PROGRESS")
async def test_a_batch_retry_reattaches_to_live_jobs_whose_status_it_does_not_know(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    await Run(batch(tmp_path, payloads(3)), make_context(state_store)).deferred_once()
    assert len(emulator.requests()) == 3
    retry = Run(batch(tmp_path, payloads(3)), make_context(state_store, try_number=2))
    deferred = await retry.deferred_once()
    assert len(emulator.requests()) == 3  # re-attached, not paid again (6 before the fix)
    emulator.advance(60)  # the jobs finish
    manifest = await retry.resume(deferred)
    assert manifest["completed"] == 3 and count(emulator, "submit") == 3


# ---------------------------------------------------------------- case 2: whose row is it


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_worker_lost_before_storing_the_id_is_recovered_on_retry(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    """Try 1's worker died after the submit left and before its id was kept: its start was kept, so
    the retry looks in that submit's window and re-attaches."""
    with pytest.raises(Killed):
        operator().execute(make_context(DyingStore(state_store, 1)))
    (job,) = emulator.requests()
    second = defer(operator(), make_context(state_store, try_number=2))
    assert second.request_id == job["request_id"] and count(emulator, "submit") == 1
    assert state_store[STATE_STORE_KEY]["request_id"] == job["request_id"]


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_retry_after_a_429_never_takes_another_tasks_request(
    emulator: SegmindEmulator,
    make_context: Any,
    state_store: Any,
    pauses: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``thumb`` sends a subset of ``hero``'s keys; its first try gets a 429, so no job of its own
    exists. Its retry looks nothing up (before the fix it took ``hero``'s 512x256 request as its own)."""
    hero = defer(
        operator(
            task_id="hero",
            payload={"prompt": "a red kite", "seed": 11, "output_format": "png", **SMALL, "width": 512},
        ),
        make_context(),
    )
    thumb = {"prompt": "a red kite", "output_format": "png"}
    thumb_store = type(state_store)()  # the thumb's own task_state_store
    good = emulator.connection_json()
    conn = json.loads(good)
    conn["extra"]["max_retries"] = 0  # the 429 fails the try at once
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    reset_process_state(sleep=pauses.append)
    emulator.add_fault("submit", status=429, count=1)
    with pytest.raises(SegmindRateLimitError):
        operator(task_id="thumb", payload=thumb).execute(make_context(thumb_store))
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", good)
    reset_process_state(sleep=pauses.append)  # the retry runs in a new worker process
    emulator.clear_calls()
    retried = defer(operator(task_id="thumb", payload=thumb), make_context(thumb_store, try_number=2))
    assert retried.request_id != hero.request_id
    assert count(emulator, "history") == 0  # nothing was sent, so nothing is looked up
    assert len(emulator.requests()) == 2


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_two_matching_rows_in_a_lost_submits_window_are_both_refused(
    emulator: SegmindEmulator,
    make_context: Any,
    pauses: list[float],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two seedless variations with equal payloads: one task's submit answer is lost while the other's
    job was created a moment before. The history cannot tell them apart: neither is taken, and it says so."""
    seedless = {"prompt": "a seedless variation", "output_format": "png"}
    other = defer(operator(task_id="variation_a", payload=seedless), make_context())
    emulator.lose_answer("submit")
    with caplog.at_level(logging.WARNING), pytest.raises(SegmindSubmitUncertainError) as info:
        operator(task_id="variation_b", payload=seedless).execute(make_context())
    assert "cannot be told apart" in str(info.value) and other.request_id in str(info.value)
    assert "cannot be told apart" in said(caplog, capsys)
    assert len(emulator.requests()) == 2


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_the_submits_start_is_kept_before_it_is_sent(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    """What a retry needs to know the window: the start is in the store while the submit is on its way."""
    seen: list[dict[str, Any]] = []
    original = SegmindHook.submit

    def watching(self: SegmindHook, model: str, payload: Any) -> dict[str, Any]:
        seen.append(dict(state_store[STATE_STORE_KEY]))
        return original(self, model, payload)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegmindHook, "submit", watching)
        defer(operator(), make_context(state_store))
    (pending,) = seen
    assert "request_id" not in pending and pending["submit_started"] > 0
    assert state_store[STATE_STORE_KEY]["request_id"] == emulator.requests()[0]["request_id"]


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_without_a_store_two_matching_requests_are_both_refused(
    emulator: SegmindEmulator,
    make_context: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Airflow 3.2 (no task_state_store): a retry looks since the run started, and where two requests
    of its payload are there, it takes neither."""
    defer(operator(task_id="copy_a"), make_context())
    defer(operator(task_id="copy_b"), make_context())
    with caplog.at_level(logging.WARNING):
        defer(operator(task_id="copy_a"), make_context(try_number=2))
    assert "cannot be told apart" in said(caplog, capsys)
    assert len(emulator.requests()) == 3


# ---------------------------------------------------------------- case 7: short history pages


@pytest.mark.segmind_emulator(time_scale=1.0, history_page_cap=20)
def test_a_retry_finds_its_job_past_a_short_first_page(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    """The history serves 20 rows a page whatever ``per_page`` asks (and says so); the job of the
    earlier try is the 26th row: the retry pages on by the answer's own fields and re-attaches."""
    with pytest.raises(Killed):
        operator().execute(make_context(DyingStore(state_store, 1)))
    (job,) = emulator.requests()
    hook = SegmindHook()
    for i in range(25):  # other work on the key since
        hook.submit(FLUX, {"prompt": f"other work {i}", "output_format": "png"})
    emulator.clear_calls()
    second = defer(operator(), make_context(state_store, try_number=2))
    assert second.request_id == job["request_id"]
    assert count(emulator, "history") == 2 and len(emulator.requests()) == 26


@pytest.mark.segmind_emulator(history_page_cap=20)
async def test_short_history_pages_neither_repay_lost_submits_nor_lose_costs(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]], state_store: Any
) -> None:
    """A batch of 30 killed mid-round, then other work on the key; the retry reads the history in pages
    of 20 (asked for 100): every job the killed try paid for is found (30 jobs for 30, not more), and
    every cost is read (the manifest's cost is what the emulator charged)."""
    with pytest.raises(Killed):
        await asyncio.to_thread(
            batch(tmp_path, payloads(30), max_in_flight=20).execute, make_context(DyingStore(state_store, 15))
        )
    assert len(emulator.requests()) > 14
    hook = SegmindHook()
    for i in range(25):  # another task's requests of the same model, newer than the killed try's
        hook.submit(FLUX, {"prompt": f"other work {i}", "output_format": "png", **SMALL})
    retry = Run(batch(tmp_path, payloads(30), max_in_flight=20), make_context(state_store, try_number=2))
    manifest = await retry.all()
    ours = [job for job in emulator.requests() if not job["body"]["prompt"].startswith("other work")]
    assert len(ours) == 30 and manifest["completed"] == 30
    assert manifest["cost"] == pytest.approx(sum(job["cost"] for job in ours)) == pytest.approx(30 * PRICE)


# ---------------------------------------------------------------- case 12: a key that cannot be sent


@pytest.mark.parametrize("bad", ["emulator\ntest-key", "emulator test-key", "emulator\x00test-key"])
def test_a_key_with_whitespace_or_control_characters_is_refused_unsent(
    emulator: SegmindEmulator,
    make_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    pauses: list[float],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    conn = json.loads(emulator.connection_json())
    conn["password"] = bad
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    with caplog.at_level(logging.DEBUG), pytest.raises(SegmindAuthError) as info:
        operator().execute(make_context(try_number=2))
    text = str(info.value)
    assert "API key of connection 'segmind_default'" in text and "U+00" in text
    logged = said(caplog, capsys)
    for part in ("emulator", "test-key", repr(bad)[1:-1]):
        assert part not in text and part not in logged
    assert emulator.calls() == []  # nothing sent, no history read


def test_a_refused_connection_is_not_uncertain_and_its_retry_looks_nothing_up(
    emulator: SegmindEmulator,
    make_context: Any,
    state_store: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    pauses: list[float],
) -> None:
    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        closed = spare.getsockname()[1]
    conn = json.loads(emulator.connection_json())
    good = json.dumps(conn)
    conn["host"] = f"http://127.0.0.1:{closed}"
    conn["extra"]["max_retries"] = 1
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    with pytest.raises(SegmindTransportError) as info:
        operator().execute(make_context(state_store))
    assert not isinstance(info.value, SegmindSubmitUncertainError)
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", good)
    reset_process_state(sleep=pauses.append)  # the settings are read again
    defer(operator(), make_context(state_store, try_number=2))
    assert count(emulator, "history") == 0 and count(emulator, "submit") == 1


def test_an_error_before_any_byte_left_is_never_uncertain() -> None:
    key = "abc\ndef"
    local = requests.exceptions.InvalidHeader(f"Invalid return character or leading space in header: {key!r}")
    assert errors.requests_refused_locally(local) and errors.requests_never_sent(local)
    error = errors.local_error("POST /v2/flux-1.1-pro", local, key)
    assert not isinstance(error, SegmindSubmitUncertainError)
    assert "abc" not in str(error) and "def" not in str(error)


# ---------------------------------------------------------------- case 13: COMPLETED without output


@pytest.mark.parametrize(
    ("reason", "raised"),
    [
        ("the worker ran out of GPU memory", SegmindRequestFailedError),
        ("NSFW content detected in the output", SegmindContentBlockedError),
    ],
)
def test_a_completed_answer_without_output_fails_with_segminds_reason(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, reason: str, raised: type[Exception]
) -> None:
    emulator.configure(null_output_error=reason)
    op = operator(deferrable=False, output_path=str(tmp_path / "a.png"))
    with pytest.raises(raised) as info:
        op.execute(make_context())
    assert reason in str(info.value) and "NoneType" not in str(info.value)
    assert not (tmp_path / "a.png").exists()
