"""PixelFlow workflows: the real operator, hook and trigger over loopback HTTP against the emulator's
workflow (flux-1.1-pro, then background removal), including a FAILED run, a retry that re-attaches
without submitting again, and bad input refused before any call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image

from segmind_provider.durable import STATE_STORE_KEY
from segmind_provider.exceptions import (
    SegmindBadRequestError,
    SegmindRequestFailedError,
    SegmindValidationError,
)
from segmind_provider.hooks.workflows import fallback_poll_path, parse_poll_answer, poll_path
from segmind_provider.operators.workflow import SegmindWorkflowOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.workflow import SegmindWorkflowTrigger

WORKFLOW = "emulator-product-cutout-v1"
INPUTS = {"prompt": "a red sneaker on a table", "seed": 11}


def operator(**kw: Any) -> SegmindWorkflowOperator:
    args: dict[str, Any] = {
        "task_id": "workflow",
        "workflow_id": WORKFLOW,
        "inputs": dict(INPUTS),
        "poll_interval": 0.2,
        "timeout": 60,
        "expected_duration": 0.15,  # flux then background removal, at the 100x time scale
    }
    args.update(kw)
    return SegmindWorkflowOperator(**args)


def defer(op: SegmindWorkflowOperator, context: dict[str, Any]) -> SegmindWorkflowTrigger:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindWorkflowTrigger)
    return trigger


def event_of(trigger: SegmindWorkflowTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        events = [e.payload async for e in trigger.run()]
        assert len(events) == 1
        return events[0]

    return asyncio.run(first())


def submits(emulator: SegmindEmulator) -> int:
    return len(emulator.calls(endpoint="workflow"))


def test_a_workflow_run_defers_then_stores_its_images_and_returns_the_json(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    op = operator(output_dir=str(tmp_path / "out"))
    context = make_context(state_store)
    trigger = defer(op, context)
    kwargs = trigger.serialize()[1]
    assert emulator.api_key not in json.dumps(kwargs)
    event = event_of(SegmindWorkflowTrigger(**kwargs))  # rebuilt from its kwargs, as a triggerer does
    assert event["status"] == "success" and event["poll_url"] == kwargs["poll_url"]

    result = op.execute_complete(context, event)

    assert result["status"] == "COMPLETED" and result["workflow_id"] == WORKFLOW
    assert result["output"]["steps"] == 2  # the JSON output, non-media values included
    image, cutout = tmp_path / "out" / "image.png", tmp_path / "out" / "cutout.png"
    assert result["output_uris"] == {"image": [str(image)], "cutout": [str(cutout)]}
    with Image.open(image) as first, Image.open(cutout) as second:
        assert first.format == second.format == "PNG"
        assert second.mode == "RGBA" and first.size == second.size  # the background was removed
    assert context["ti"].xcoms["request_id"] == result["request_id"]
    assert state_store[STATE_STORE_KEY]["poll_url"] == kwargs["poll_url"]
    assert submits(emulator) == 1
    json.dumps(result)  # XCom-safe


def test_without_output_dir_nothing_is_downloaded_and_the_urls_are_returned(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    result = operator(deferrable=False).execute(make_context())
    assert result["output_uris"] == {}
    assert result["output"]["cutout"].startswith(emulator.media_url + "/media/")
    assert not emulator.calls(endpoint="media")


def test_a_failed_workflow_raises_its_reason(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    emulator.register_workflow("always-fails-v1", fail="upstream step ran out of GPU memory")
    op = operator(workflow_id="always-fails-v1", output_dir=str(tmp_path))
    context = make_context(state_store)
    event = event_of(defer(op, context))
    assert event["status"] == "failed"
    with pytest.raises(SegmindRequestFailedError, match="ran out of GPU memory") as info:
        op.execute_complete(context, event)
    assert not isinstance(info.value, AirflowFailException)  # an ordinary failure: Airflow may retry
    assert not list(tmp_path.iterdir())


@pytest.mark.segmind_emulator(time_scale=1.0)  # flux "takes" 14 s: still running when the retry comes
def test_a_retry_reattaches_to_the_running_run_without_a_second_submit(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    op = operator(output_dir=str(tmp_path))
    first = defer(op, make_context(state_store))
    # The first try's worker is lost; the retry finds the run in the task_state_store.
    retry_context = make_context(state_store, try_number=2)
    second = defer(operator(output_dir=str(tmp_path)), retry_context)
    assert second.request_id == first.request_id and second.poll_url == first.poll_url
    assert submits(emulator) == 1

    emulator.advance(60)  # the run ends; a third try re-attaches to the finished run and completes
    result = operator(output_dir=str(tmp_path)).execute(make_context(state_store, try_number=3))
    assert result["request_id"] == first.request_id
    assert sorted(result["output_uris"]) == ["cutout", "image"]
    assert submits(emulator) == 1


def test_a_retry_after_a_failed_run_submits_a_new_one(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    emulator.register_workflow("fails-once-v1", fail="transient upstream error")
    op = operator(workflow_id="fails-once-v1")
    event = event_of(defer(op, make_context(state_store)))
    assert event["status"] == "failed"
    retry = defer(operator(workflow_id="fails-once-v1"), make_context(state_store, try_number=2))
    assert retry.request_id != event["request_id"]
    assert submits(emulator) == 2


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"workflow_id": "https://api.segmind.com/workflows/abc-v1"}, "the id alone"),
        ({"workflow_id": " "}, "workflow_id must be a non-empty string"),
        ({"inputs": ["prompt", "x"]}, "inputs must be a dict"),
        ({"inputs": {"prompt": {1, 2}}}, "plain JSON values"),
        ({"inputs": {"prompt": float("nan")}}, "plain JSON values"),
        ({"output_dir": "/tmp/../etc"}, "climbs out of its folder"),
    ],
)
def test_bad_input_is_refused_before_any_call(
    emulator: SegmindEmulator, make_context: Any, kw: dict[str, Any], problem: str
) -> None:
    with pytest.raises(SegmindValidationError, match=problem):
        operator(**kw).execute(make_context())
    assert emulator.calls() == []


def test_inputs_the_workflow_does_not_take_are_refused_unpaid(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    with pytest.raises(SegmindBadRequestError, match=r"unknown input.*promt.*missing required input.*prompt"):
        operator(inputs={"promt": "typo"}).execute(make_context())
    assert emulator.requests() == []  # no step was scheduled, nothing billed


def test_poll_url_off_the_api_host_is_not_followed() -> None:
    base = "https://api.segmind.com"
    assert poll_path(base, base + "/workflows/request/r1", "r1") == "/workflows/request/r1"
    assert poll_path(base, "https://evil.example/collect/r1", "r1") == fallback_poll_path("r1")
    assert poll_path(base, None, "r1") == "/workflows/request/r1"


def test_a_completed_output_string_is_decoded_and_other_text_kept() -> None:
    assert parse_poll_answer({"status": "COMPLETED", "output": '{"a": 1}'})["output"] == {"a": 1}
    assert parse_poll_answer({"status": "completed", "output": "plain"}) == {
        "status": "COMPLETED",
        "output": "plain",
    }
