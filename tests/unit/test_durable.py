"""Pay once without a stored request id: a lost submit answer and a store-less retry find the job in
Segmind's request history (the emulator's account API) instead of paying again.

Through the real operator and hook against the emulator on loopback; the bounded history wait runs on
a virtual sleep (``reset_process_state``), so "not found" costs no wall time.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from segmind_provider.durable import (
    HISTORY_WAIT_SECONDS,
    RESULT_LIFETIME_SECONDS,
    STATE_STORE_KEY,
    parse_request_body,
    retry_since,
    same_request,
)
from segmind_provider.exceptions import SegmindContentBlockedError, SegmindSubmitUncertainError
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.runtime import reset_process_state
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"
PAYLOAD = {"prompt": "a lighthouse at dawn", "output_format": "png", "seed": 7}


@pytest.fixture
def slept() -> list[float]:
    """Sleeps of the history wait (and of any retry back-off), recorded instead of slept."""
    pauses: list[float] = []
    reset_process_state(sleep=pauses.append)
    return pauses


def operator(**kw: Any) -> SegmindOperator:
    args: dict[str, Any] = {
        "task_id": "generate",
        "model": FLUX,
        "payload": dict(PAYLOAD),
        "deferrable": True,
        "poll_interval": 0.2,
        "timeout": 30,
        "expected_duration": 0.14,
    }
    args.update(kw)
    return SegmindOperator(**args)


def defer(op: SegmindOperator, context: Any) -> SegmindRequestTrigger:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger)
    return trigger


def count(emulator: SegmindEmulator, endpoint: str) -> int:
    return len(emulator.calls(endpoint=endpoint))


# ---------------------------------------------------------------- a lost submit answer


@pytest.mark.segmind_emulator(time_scale=1.0)  # still running when re-attached: the task defers
@pytest.mark.parametrize("how", ["drop", "hang"])
def test_a_lost_submit_answer_reattaches_to_the_job_the_history_shows(
    emulator: SegmindEmulator,
    make_context: Any,
    state_store: dict[str, Any],
    slept: list[float],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "hang":  # the answer never comes: the client's read timeout (1 s here) ends the wait
        conn = json.loads(emulator.connection_json())
        conn["extra"]["timeout"] = 1
        monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    emulator.lose_answer("submit", how=how, hold=5.0 if how == "hang" else 0.0)
    trigger = defer(operator(), make_context(state_store))
    jobs = emulator.requests(model=FLUX)
    assert [job["request_id"] for job in jobs] == [trigger.request_id]  # one job, the one re-attached
    assert count(emulator, "submit") == 1
    assert state_store[STATE_STORE_KEY]["request_id"] == trigger.request_id  # a retry re-attaches too


def test_a_lost_answer_whose_job_failed_reports_the_failure(
    emulator: SegmindEmulator, make_context: Any, slept: list[float]
) -> None:
    emulator.configure(blocked_words=["forbidden"])
    emulator.lose_answer("submit")
    payload = {"prompt": "a forbidden castle", "output_format": "png"}
    op = operator(payload=payload)
    with pytest.raises((SegmindContentBlockedError, TaskDeferred)) as info:
        op.execute(make_context())
    assert count(emulator, "submit") == 1
    if isinstance(info.value, TaskDeferred):  # still running when re-attached: the wait reports it
        assert info.value.trigger.request_id == emulator.requests()[0]["request_id"]


def test_a_submit_lost_before_any_job_fails_clearly_after_a_bounded_wait(
    emulator: SegmindEmulator, make_context: Any, slept: list[float]
) -> None:
    emulator.add_fault("submit", kind="drop", count=1)  # dropped before the job was made
    with pytest.raises(SegmindSubmitUncertainError) as info:
        operator().execute(make_context())
    assert isinstance(info.value, AirflowFailException)  # Airflow does not retry into a second payment
    assert "request history" in str(info.value) and "showed no flux-1.1-pro request" in str(info.value)
    assert emulator.requests() == []
    assert 0 < sum(slept) <= HISTORY_WAIT_SECONDS
    assert 1 < count(emulator, "history") <= 6
    assert count(emulator, "submit") == 1


def test_an_unreadable_history_fails_clearly(
    emulator: SegmindEmulator, make_context: Any, slept: list[float]
) -> None:
    emulator.add_fault("account", status=503)
    emulator.lose_answer("submit")
    with pytest.raises(SegmindSubmitUncertainError, match="history could not be read"):
        operator().execute(make_context())
    assert count(emulator, "submit") == 1


def test_another_payload_in_the_history_is_not_taken_for_the_lost_job(
    emulator: SegmindEmulator, make_context: Any, slept: list[float]
) -> None:
    SegmindHook().submit(FLUX, {**PAYLOAD, "seed": 8})  # the same model a moment before, other seed
    emulator.add_fault("submit", kind="drop", count=1)
    with pytest.raises(SegmindSubmitUncertainError):
        operator().execute(make_context())


# ---------------------------------------------------------------- a retry with no stored id


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_retry_without_task_state_store_reattaches_from_the_history(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    first = defer(operator(), make_context())  # Airflow 3.2: no task_state_store
    second = defer(operator(), make_context(try_number=2))
    assert second.request_id == first.request_id
    assert count(emulator, "submit") == 1


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_retry_fetches_an_earlier_completed_request(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Any
) -> None:
    request_id = SegmindHook().submit(FLUX, dict(PAYLOAD))["request_id"]
    emulator.advance(30)  # done
    result = operator(output_path=str(tmp_path / "a.png")).execute(make_context(try_number=2))
    assert result["request_id"] == request_id and (tmp_path / "a.png").is_file()
    assert count(emulator, "submit") == 1  # try 1's only


@pytest.mark.segmind_emulator(blocked_words=["forbidden"])
def test_a_retry_does_not_reattach_to_a_failed_request(emulator: SegmindEmulator, make_context: Any) -> None:
    payload = {"prompt": "a forbidden castle", "output_format": "png"}
    SegmindHook().submit(FLUX, payload)
    emulator.advance(30)
    defer(operator(payload=payload), make_context(try_number=2))
    assert len(emulator.requests()) == 2


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_first_try_and_durable_false_never_read_the_history(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    defer(operator(), make_context())
    defer(operator(durable=False), make_context(try_number=2))
    assert count(emulator, "history") == 0 and count(emulator, "submit") == 2


# ---------------------------------------------------------------- the matching rule


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        ("{'prompt': 'fox', 'seed': 1, 'upsample': True}", {"prompt": "fox", "seed": 1, "upsample": True}),
        ('{"prompt": "fox", "upsample": true}', {"prompt": "fox", "upsample": True}),
        ({"prompt": "fox"}, {"prompt": "fox"}),
        ("not a literal", None),
        ("['a list']", None),
        ("__import__('os')", None),
        (None, None),
    ],
)
def test_request_bodies_are_parsed_tolerantly(body: Any, parsed: Any) -> None:
    assert parse_request_body(body) == parsed


def test_same_request_needs_the_model_and_exactly_the_sent_parameters() -> None:
    row = {"model_name": "Flux-1.1-Pro", "request_body": "{'prompt': 'fox', 'seed': 1, 'width': 1024}"}
    assert not same_request(row, FLUX, {"prompt": "fox", "seed": 1})  # a key not sent: another request
    assert same_request(row, FLUX, {"prompt": "fox", "seed": 1, "width": 1024})
    assert same_request(row, FLUX, {"prompt": "fox", "seed": 1.0, "width": 1024})
    assert not same_request(row, FLUX, {"prompt": "fox", "seed": 2})
    assert not same_request(row, FLUX, {"prompt": "fox", "steps": 4})
    assert not same_request(row, "flux-kontext-pro", {"prompt": "fox"})
    assert not same_request({**row, "request_body": "garbage"}, FLUX, {"prompt": "fox"})


def test_retry_since_is_the_run_start_at_most_an_hour_back(make_context: Any) -> None:
    now = 1_800_000_000.0
    assert retry_since(make_context(), now) is None  # a first try does not look
    assert retry_since(make_context(try_number=3), now) == now - RESULT_LIFETIME_SECONDS

    class Run:
        start_date = dt.datetime.fromtimestamp(now - 600, dt.timezone.utc)

    since = retry_since(make_context(try_number=2, dag_run=Run()), now)
    assert since is not None and now - 700 < since < now - 600


@pytest.mark.segmind_emulator(blocked_words=["forbidden"])
def test_a_retry_of_a_content_blocked_request_fails_again_without_paying(
    emulator: SegmindEmulator, make_context: Any, state_store: Any
) -> None:
    """Seen in a real deployment: the stale-executor-event race retried a task whose job had been
    content-blocked, and each try paid for the same blocked input again. The same input is blocked
    again: the retry re-attaches to the FAILED request and fails with its reason, paying nothing."""
    payload = {"prompt": "a forbidden castle", "output_format": "png"}
    defer(operator(payload=payload), make_context(state_store))
    emulator.advance(30)  # the job ended FAILED: a content block
    with pytest.raises(SegmindContentBlockedError) as blocked:
        operator(payload=payload).execute(make_context(state_store, try_number=2))
    assert isinstance(blocked.value, AirflowFailException)
    assert count(emulator, "submit") == 1
