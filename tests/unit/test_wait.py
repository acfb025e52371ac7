"""The one worker-side wait (``segmind_provider.wait``) through the real hook: ``SegmindHook.wait``/``generate``.

The trigger's own ``run()`` runs in the caller's thread; these tests drive it over loopback HTTP
against the emulator (100x time scale unless a test needs the real one), as a PythonOperator would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.execution_time.context import set_current_context
from PIL import Image
from test_operator import FLUX, PAYLOAD, RESULT_KEYS, calls

from segmind_provider.decorators.segmind import _SegmindBatchDecoratedOperator, _SegmindDecoratedOperator
from segmind_provider.durable import STATE_STORE_KEY
from segmind_provider.exceptions import (
    SegmindContentBlockedError,
    SegmindTimeoutError,
    SegmindValidationError,
)
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.testing.emulator.runner import SegmindEmulator

QUICK = {"expected_duration": 0.14, "poll_interval": 0.2}


@contextmanager
def in_task(context: dict[str, Any]) -> Iterator[None]:
    """Code running inside a task: ``get_current_context()`` finds ``context``."""
    with set_current_context(context):  # type: ignore[arg-type]
        yield


def test_generate_submits_waits_fetches_and_stores_like_the_operator(
    emulator: SegmindEmulator, tmp_path: Path
) -> None:
    result = SegmindHook().generate(
        FLUX, PAYLOAD, timeout=30, output_path=str(tmp_path / "hook.png"), **QUICK
    )
    assert set(result) == RESULT_KEYS and result["status"] == "COMPLETED" and result["model"] == FLUX
    assert result["metrics"]["inference_time"] and result["cost"] is not None
    (uri,) = result["output_uris"]
    with Image.open(uri.removeprefix("file://")) as image:
        assert image.format == "PNG"
    assert calls(emulator, "submit") == 1 and calls(emulator, "result") == 1
    assert calls(emulator, "status") >= 1 and calls(emulator, "media") == 1


def test_wait_returns_the_result_of_a_request_submitted_elsewhere(emulator: SegmindEmulator) -> None:
    hook = SegmindHook()
    request_id = hook.submit(FLUX, PAYLOAD)["request_id"]
    result = hook.wait(request_id, timeout=30, model=FLUX, **QUICK)
    assert result["status"] == "COMPLETED" and str(result["output"]).startswith("http")
    assert result["metrics"]["inference_time"]
    assert calls(emulator, "submit") == 1 and calls(emulator, "status") >= 1


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_wait_past_its_timeout_raises_naming_the_request(emulator: SegmindEmulator) -> None:
    hook = SegmindHook()
    request_id = hook.submit(FLUX, PAYLOAD)["request_id"]  # a real-time 14 s job
    with pytest.raises(SegmindTimeoutError) as info:
        hook.wait(request_id, timeout=0.3, poll_interval=0.1)
    assert request_id in str(info.value) and calls(emulator, "result") == 0


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_generate_past_its_timeout_raises_and_stores_nothing(
    emulator: SegmindEmulator, tmp_path: Path
) -> None:
    with pytest.raises(SegmindTimeoutError):
        SegmindHook().generate(
            FLUX, PAYLOAD, timeout=0.3, output_path=str(tmp_path / "late.png"), poll_interval=0.1
        )
    assert not (tmp_path / "late.png").exists() and calls(emulator, "result") == 0


@pytest.mark.segmind_emulator(blocked_words=["forbidden"])
def test_a_failed_job_raises_its_reason_from_generate_and_wait(
    emulator: SegmindEmulator, tmp_path: Path
) -> None:
    hook = SegmindHook()
    with pytest.raises(SegmindContentBlockedError, match="forbidden"):
        hook.generate(FLUX, {"prompt": "a forbidden castle"}, output_path=str(tmp_path / "x"), **QUICK)
    request_id = hook.submit(FLUX, {"prompt": "another forbidden castle"})["request_id"]
    with pytest.raises(SegmindContentBlockedError, match="forbidden"):
        hook.wait(request_id, model=FLUX, **QUICK)
    assert list(tmp_path.iterdir()) == [] and calls(emulator, "result") == 0


def test_bad_input_is_refused_before_any_call(emulator: SegmindEmulator, tmp_path: Path) -> None:
    hook = SegmindHook()
    with pytest.raises(SegmindValidationError):
        hook.generate(FLUX, {"prompt": "x", "output_format": "tiff"})
    with pytest.raises(SegmindValidationError):  # the path says JPEG, the payload PNG
        hook.generate(FLUX, PAYLOAD, output_path=str(tmp_path / "out.jpg"))
    with pytest.raises(ValueError, match="timeout"):
        hook.generate(FLUX, PAYLOAD, timeout=0)
    with pytest.raises(ValueError, match="poll_interval"):
        hook.wait("any-request", poll_interval=-1)
    assert emulator.calls() == []


async def test_wait_called_from_a_running_event_loop_still_blocks_and_returns(
    emulator: SegmindEmulator,
) -> None:
    hook = SegmindHook()
    request_id = hook.submit(FLUX, PAYLOAD)["request_id"]
    result = hook.wait(request_id, model=FLUX, **QUICK)  # an ``async def`` task calling the hook
    assert result["status"] == "COMPLETED"
    assert asyncio.get_running_loop().is_running()


def test_generate_in_a_task_pays_once_across_tries(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    hook = SegmindHook()
    with in_task(make_context(state_store)):
        first = hook.generate(FLUX, PAYLOAD, **QUICK)
        other = hook.generate(FLUX, {**PAYLOAD, "seed": 2}, **QUICK)
    assert calls(emulator, "submit") == 2
    assert len([key for key in state_store if key.startswith(STATE_STORE_KEY)]) == 2  # one entry per payload
    with in_task(make_context(state_store, try_number=2)):  # the retry of a try that died after both
        again = hook.generate(FLUX, PAYLOAD, **QUICK)
        other_again = hook.generate(FLUX, {**PAYLOAD, "seed": 2}, **QUICK)
    assert calls(emulator, "submit") == 2
    assert (again["request_id"], other_again["request_id"]) == (first["request_id"], other["request_id"])


def test_durable_false_or_outside_a_task_submits_every_time(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    hook = SegmindHook()
    hook.generate(FLUX, PAYLOAD, **QUICK)
    hook.generate(FLUX, PAYLOAD, **QUICK)
    with in_task(make_context(state_store)):
        hook.generate(FLUX, PAYLOAD, durable=False, **QUICK)
    assert calls(emulator, "submit") == 3 and state_store == {}


def test_the_decorated_functions_must_return_payloads(emulator: SegmindEmulator, make_context: Any) -> None:
    single = _SegmindDecoratedOperator(task_id="one", python_callable=lambda: "a prompt", model=FLUX)
    with pytest.raises(TypeError, match="must return the payload dict, got str"):
        single.execute(make_context())
    batch = _SegmindBatchDecoratedOperator(task_id="many", python_callable=lambda: 3, model=FLUX)
    with pytest.raises(TypeError, match="must return a list of payloads or a dict"):
        batch.execute(make_context())
    assert emulator.calls() == []


def test_a_decorated_task_without_deferral_waits_in_the_worker(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    single = _SegmindDecoratedOperator(
        task_id="one",
        python_callable=lambda subject: {"prompt": f"a {subject}", "output_format": "png"},
        op_kwargs={"subject": "heron"},
        model=FLUX,
        deferrable=False,
        timeout=30,
        **QUICK,
    )
    result = single.execute(make_context())
    assert set(result) == RESULT_KEYS and result["status"] == "COMPLETED"
    assert emulator.requests(FLUX)[-1]["body"] == {"prompt": "a heron", "output_format": "png"}
    assert calls(emulator, "submit") == 1 and calls(emulator, "result") == 1


@pytest.mark.parametrize(
    ("page", "heading", "dag_id", "tasks"),
    [
        ("operator.md", "## TaskFlow", "taskflow_images", {"animal", "shots", "report"}),
        ("hook.md", "## Waiting from plain Python", "hook_images", {"hero"}),
        ("review.md", "## Example", "review_images", {"images", "review", "publish"}),
    ],
)
def test_the_docs_examples_are_dags_that_parse(
    page: str, heading: str, dag_id: str, tasks: set[str], tmp_path: Path
) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    text = (Path(__file__).resolve().parents[2] / "docs" / page).read_text()
    start = text.index("```python\n", text.index(heading)) + len("```python\n")
    code = text[start : text.index("\n```", start)]
    (tmp_path / f"{dag_id}.py").write_text(code)
    bag = BundleDagBag(dag_folder=tmp_path, bundle_path=tmp_path, bundle_name="docs")
    assert bag.import_errors == {} and set(bag.dags) == {dag_id}
    assert {task.task_id for task in bag.dags[dag_id].tasks} == tasks
