"""SegmindOperator: deferral, the worker path, retries that never pay twice, outputs, outlets, the link.

Most tests run the real hook against the emulator on loopback (100x time scale); a few use a
small fake hook for answers the emulator never gives (a submit that is already terminal, several
outputs, a file in the wrong format).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from PIL import Image

from segmind_provider.events import make_event
from segmind_provider.exceptions import (
    SegmindBadRequestError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindOutputError,
    SegmindRequestFailedError,
    SegmindTimeoutError,
    SegmindValidationError,
)
from segmind_provider.hooks.connection import ConnectionSettings, settings_from
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.segmind import STATE_STORE_KEY, SegmindOperator, SegmindOutputLink
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"
PAYLOAD = {"prompt": "a lighthouse at dawn", "output_format": "png"}
RESULT_KEYS = {"request_id", "model", "status", "output", "output_uris", "metrics", "cost"}


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
    assert info.value.method_name == "execute_complete"
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger)
    return trigger


async def finish(op: SegmindOperator, context: Any, trigger: SegmindRequestTrigger) -> dict[str, Any]:
    (event,) = [e async for e in trigger.run()]
    return op.execute_complete(context, event.payload)


def calls(emulator: SegmindEmulator, endpoint: str) -> int:
    return len(emulator.calls(endpoint=endpoint))


def wait_for(request_id: str, status: str) -> None:
    hook = SegmindHook()
    for _ in range(200):
        if hook.get_status(request_id)["status"] == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{request_id} never reached {status}")


def png_data_uri(size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


class FakeHook:
    """Answers the emulator never gives; records what the operator asked."""

    def __init__(self, submit_answer: dict[str, Any], result: dict[str, Any] | None = None) -> None:
        self.submit_answer = submit_answer
        self.result = result or {
            "status": "COMPLETED",
            "output": png_data_uri(),
            "metrics": {"inference_time": 1.5},
        }
        self.asked: list[str] = []

    def submit(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.asked.append("submit")
        return self.submit_answer

    def get_status(self, request_id: str) -> dict[str, Any]:
        self.asked.append("status")
        return {"status": "COMPLETED"}

    def get_result(self, request_id: str) -> dict[str, Any]:
        self.asked.append("result")
        return self.result

    def download(self, url: str, fileobj: Any, *, max_bytes: int) -> str:
        raise AssertionError("nothing to download in these tests")

    def get_settings(self) -> ConnectionSettings:
        """A connection without a credit floor: nothing to read before a submit."""
        return settings_from(None, "fake", {"SEGMIND_API_KEY": "fake-key"})


# ---------------------------------------------------------------- the deferrable journey


async def test_deferral_carries_the_trigger_and_remembers_the_request(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    op = operator(output_path=str(tmp_path / "img"), timeout=timedelta(minutes=5))
    context = make_context(state_store)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger)
    request_id = context["ti"].xcoms["request_id"]
    assert trigger.request_id == request_id == state_store[STATE_STORE_KEY]["request_id"]
    assert before + 300 <= trigger.end_time <= time.time() + 300  # absolute deadline
    assert info.value.timeout is not None and info.value.timeout > timedelta(minutes=5)
    assert trigger.model == FLUX and trigger.submitted_at >= before
    assert calls(emulator, "submit") == 1 and calls(emulator, "status") == 0


async def test_deferred_task_resumes_and_stores_the_image(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    payload = {**PAYLOAD, "aspect_ratio": "custom", "width": 512, "height": 384}
    op = operator(payload=payload, output_path=str(tmp_path / "out" / "img"))
    context = make_context(state_store)
    trigger = defer(op, context)
    result = await finish(op, make_context(state_store), trigger)
    assert set(result) == RESULT_KEYS and result["status"] == "COMPLETED"
    assert result["request_id"] == trigger.request_id and result["model"] == FLUX
    assert result["metrics"]["inference_time"] > 0
    (uri,) = result["output_uris"]
    assert uri.endswith("img.png")
    with Image.open(tmp_path / "out" / "img.png") as image:
        assert image.format == "PNG" and image.size == (512, 384)
    # kept after success: a re-run of a finished try re-fetches instead of paying again
    assert state_store[STATE_STORE_KEY]["request_id"] == result["request_id"]
    assert calls(emulator, "submit") == 1 and calls(emulator, "result") == 1


def test_worker_path_polls_in_the_worker_and_stores_to_memory(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    op = operator(deferrable=False, output_path="memory://segmind-tests/worker/img.png")
    result = op.execute(make_context(state_store))
    (uri,) = result["output_uris"]
    assert uri.startswith("memory://") and uri.endswith("img.png")
    data = ObjectStoragePath(uri).read_bytes()
    assert data.startswith(b"\x89PNG")
    assert calls(emulator, "submit") == 1 and calls(emulator, "result") == 1
    assert calls(emulator, "status") >= 1


def test_no_output_path_returns_the_url_without_downloading(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    result = operator(deferrable=False).execute(make_context())
    assert result["output_uris"] == [] and str(result["output"]).startswith("http")
    assert calls(emulator, "media") == 0


def test_sync_mode_stores_the_v1_bytes(emulator: SegmindEmulator, make_context: Any, tmp_path: Path) -> None:
    result = operator(mode="sync", output_path=str(tmp_path / "sync")).execute(make_context())
    assert result["request_id"] is None and result["status"] == "COMPLETED"
    (uri,) = result["output_uris"]
    with Image.open(uri.removeprefix("file://")) as image:
        assert image.format == "PNG"
    assert calls(emulator, "sync") == 1 and calls(emulator, "submit") == 0


def test_an_answer_already_terminal_finishes_without_deferring(make_context: Any, tmp_path: Path) -> None:
    op = operator(output_path=str(tmp_path / "now.png"))
    fake = FakeHook({"request_id": "r-1", "status": "COMPLETED"})
    op.hook = fake  # type: ignore[assignment]
    context = make_context()
    result = op.execute(context)
    assert result["request_id"] == "r-1" and result["output_uris"][0].endswith("now.png")
    assert context["ti"].xcoms["request_id"] == "r-1"
    assert fake.asked == ["submit", "result"]


def test_a_submit_answer_already_failed_raises_the_failure(make_context: Any) -> None:
    op = operator()
    op.hook = FakeHook({"request_id": "r-2", "status": "FAILED", "error": "NSFW content"})  # type: ignore[assignment]
    with pytest.raises(SegmindContentBlockedError):
        op.execute(make_context())


# ---------------------------------------------------------------- validation before spending


def test_a_bad_payload_fails_before_any_http_call(emulator: SegmindEmulator, make_context: Any) -> None:
    op = operator(payload={"prompt": "x", "aspect_ratio": "7:3"})
    with pytest.raises(SegmindValidationError) as info:
        op.execute(make_context())
    assert "aspect_ratio" in str(info.value) and "7:3" in str(info.value)
    assert isinstance(info.value, AirflowFailException)
    assert emulator.calls() == []


def test_validate_false_sends_the_payload_as_is(emulator: SegmindEmulator, make_context: Any) -> None:
    op = operator(payload={"prompt": "x", "aspect_ratio": "7:3"}, validate=False)
    with pytest.raises(SegmindBadRequestError):  # the emulator's own check answers 400
        op.execute(make_context())
    assert calls(emulator, "submit") == 1


def test_templated_payload_and_path_render(make_context: Any) -> None:
    op = operator(
        payload={"prompt": "a {{ ds }} cat", "seed": "{{ 40 + 2 }}"}, output_path="/data/{{ ds }}/img"
    )
    assert {"payload", "output_path", "input_files", "input_conn_id"} <= set(op.template_fields)
    assert op.template_fields_renderers == {"payload": "json"}
    op.render_template_fields({"ds": "2026-01-01"})
    assert op.payload == {"prompt": "a 2026-01-01 cat", "seed": "42"}
    assert op.output_path == "/data/2026-01-01/img"


def test_constructor_checks() -> None:
    assert operator(timeout=timedelta(minutes=2)).timeout == 120.0
    with pytest.raises(ValueError):
        operator(mode="batch")
    with pytest.raises(ValueError):
        operator(timeout=0)


# ---------------------------------------------------------------- retries never pay twice


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_retry_reattaches_to_a_running_request(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    first = defer(operator(), make_context(state_store))  # try 1 deferred, then died
    second = defer(operator(), make_context(state_store))  # try 2
    assert second.request_id == first.request_id
    assert second.submitted_at == first.submitted_at  # the schedule keeps its anchor
    assert calls(emulator, "submit") == 1


async def test_retry_fetches_a_completed_request_without_submitting(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], tmp_path: Path
) -> None:
    first = defer(operator(output_path=str(tmp_path / "a.png")), make_context(state_store))
    wait_for(first.request_id, "COMPLETED")
    result = operator(output_path=str(tmp_path / "a.png")).execute(make_context(state_store))
    assert result["request_id"] == first.request_id and (tmp_path / "a.png").exists()
    assert calls(emulator, "submit") == 1


def test_retry_without_deferral_reattaches_too(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    first = defer(operator(), make_context(state_store))
    result = operator(deferrable=False).execute(make_context(state_store))
    assert result["request_id"] == first.request_id
    assert calls(emulator, "submit") == 1


@pytest.mark.segmind_emulator(failing_words=["crumbling"])
def test_retry_submits_fresh_after_a_failed_request(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    """A job that FAILED for a reason other than a content block is paid for again on retry (a
    content block is not: ``test_a_retry_of_a_content_blocked_request_fails_again_without_paying``)."""
    payload = {"prompt": "a crumbling castle"}
    first = defer(operator(payload=payload), make_context(state_store))
    wait_for(first.request_id, "FAILED")
    second = defer(operator(payload=payload), make_context(state_store))
    assert second.request_id != first.request_id
    assert calls(emulator, "submit") == 2


def test_retry_submits_fresh_when_the_request_is_gone(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    first = defer(operator(), make_context(state_store))
    emulator.expire(first.request_id)  # 404 from now on
    second = defer(operator(), make_context(state_store))
    assert second.request_id != first.request_id
    assert calls(emulator, "submit") == 2


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_retry_submits_fresh_when_the_payload_changed(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    first = defer(operator(), make_context(state_store))
    second = defer(operator(payload={"prompt": "another prompt"}), make_context(state_store))
    assert second.request_id != first.request_id and calls(emulator, "status") == 0


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_durable_false_and_no_state_store_always_submit(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any]
) -> None:
    defer(operator(durable=False), make_context(state_store))
    defer(operator(durable=False), make_context(state_store))
    assert state_store == {}
    defer(operator(), make_context())  # Airflow 3.2: no task_state_store in the context
    assert calls(emulator, "submit") == 3


def test_a_state_store_that_fails_does_not_fail_a_paid_job(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    class BrokenStore(dict):  # type: ignore[type-arg]
        def set(self, key: str, value: Any) -> None:
            raise ConnectionError("API server unreachable")

    trigger = defer(operator(), make_context(BrokenStore()))
    assert trigger.request_id and calls(emulator, "submit") == 1


# ---------------------------------------------------------------- each event kind


def test_timeout_event_raises_with_the_request_id(make_context: Any) -> None:
    event = make_event("timeout", "req-77", "Segmind request req-77 was still PROCESSING")
    with pytest.raises(SegmindTimeoutError) as info:
        operator().execute_complete(make_context(), event)
    assert "req-77" in str(info.value) and not isinstance(info.value, AirflowFailException)


def test_error_event_raises(make_context: Any) -> None:
    with pytest.raises(SegmindError) as info:
        operator().execute_complete(
            make_context(), make_event("error", "req-78", "HTTP 404: unknown request")
        )
    assert "req-78" in str(info.value)


def test_failed_events_raise_the_right_failure(make_context: Any) -> None:
    with pytest.raises(SegmindContentBlockedError) as blocked:
        operator().execute_complete(
            make_context(), make_event("failed", "r", "blocked by the safety (RAI) filter")
        )
    assert isinstance(blocked.value, AirflowFailException)  # same input, same block: no retry
    with pytest.raises(SegmindRequestFailedError) as failed:
        operator().execute_complete(make_context(), make_event("failed", "r", "worker crashed"))
    assert not isinstance(failed.value, AirflowFailException)


@pytest.mark.parametrize("event", [None, {}, {"status": "done", "request_id": "r"}, {"status": "success"}])
def test_malformed_events_are_refused(make_context: Any, event: Any) -> None:
    with pytest.raises(SegmindError):
        operator().execute_complete(make_context(), event)


# ---------------------------------------------------------------- outputs


def test_a_path_extension_that_contradicts_the_payload_fails_before_any_http_call(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    op = operator(output_path=str(tmp_path / "img.jpg"))  # asks png, names it .jpg
    with pytest.raises(SegmindValidationError, match=r"'\.jpg'.*png.*drop it"):
        op.execute(make_context())
    assert emulator.calls() == []


def test_magic_bytes_that_disagree_with_the_path_are_an_error(make_context: Any, tmp_path: Path) -> None:
    op = operator(
        model="vendor/no-schema", output_path=str(tmp_path / "img.jpg")
    )  # no format to check up front
    op.hook = FakeHook({"request_id": "r", "status": "COMPLETED"})  # type: ignore[assignment]
    with pytest.raises(SegmindOutputError, match=r"output_path ends in '\.jpg'"):
        op.execute(make_context())
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_magic_bytes_that_disagree_with_the_request_are_an_error(make_context: Any, tmp_path: Path) -> None:
    op = operator(output_path=str(tmp_path / "img"))
    op.hook = FakeHook(  # type: ignore[assignment]
        {"request_id": "r", "status": "COMPLETED"},
        {"status": "COMPLETED", "output": png_data_uri(fmt="JPEG"), "metrics": {}},
    )
    with pytest.raises(SegmindOutputError):
        op.execute(make_context())
    assert list(tmp_path.iterdir()) == []


def test_several_outputs_are_numbered(make_context: Any) -> None:
    op = operator(output_path="memory://segmind-tests/many/img.png")
    op.hook = FakeHook(  # type: ignore[assignment]
        {"request_id": "r", "status": "COMPLETED"},
        {"status": "COMPLETED", "output": [png_data_uri(), png_data_uri((4, 4))], "metrics": {}},
    )
    result = op.execute(make_context())
    assert [u.rsplit("/", 1)[-1] for u in result["output_uris"]] == ["img-1.png", "img-2.png"]
    assert all(ObjectStoragePath(u).read_bytes().startswith(b"\x89PNG") for u in result["output_uris"])


def test_outlets_carry_the_stored_uris(make_context: Any, tmp_path: Path) -> None:
    asset = Asset("file:///images/lighthouse")
    op = operator(output_path=str(tmp_path / "o.png"), outlets=[asset])
    op.hook = FakeHook({"request_id": "r-5", "status": "COMPLETED"})  # type: ignore[assignment]
    events = OutletEventAccessors()
    result = op.execute(make_context(outlet_events=events))
    extra = events[asset].extra
    assert extra["output_uris"] == result["output_uris"] and extra["request_id"] == "r-5"
    assert extra["model"] == FLUX


# ---------------------------------------------------------------- extra link


def test_extra_link_opens_a_stored_http_file_else_the_model_page_never_an_expiring_url() -> None:
    link = SegmindOutputLink()
    assert link.name == "Segmind output"
    assert any(isinstance(x, SegmindOutputLink) for x in SegmindOperator.operator_extra_links)
    stored = {"model": FLUX, "output_uris": ["https://cdn.example/a.png"], "output": "https://media/x.webp"}
    assert link.link_from_result(stored) == "https://cdn.example/a.png"
    local = {"model": FLUX, "output_uris": ["file:///tmp/a.png"], "output": "https://media/x.webp"}
    assert link.link_from_result(local) == "https://www.segmind.com/models/flux-1.1-pro/api"
    assert link.link_from_result({"model": "not-in-the-catalog", "output": "https://m/2.png"}) == ""
    assert link.link_from_result(None) == ""


def test_openlineage_names_the_stored_outputs_the_model_and_the_request(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    op = operator(output_path=str(tmp_path / "hero.png"), deferrable=False)
    result = op.execute(make_context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "hero.png"))]
    facet = lineage.run_facets["externalQuery"]
    assert facet.externalQueryId == result["request_id"] and facet.source == f"segmind:{FLUX}"


# ---------------------------------------------------------------- the key stays secret


async def test_the_key_is_in_no_xcom_state_kwargs_log_or_media_call(
    emulator: SegmindEmulator,
    make_context: Any,
    state_store: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    op = operator(output_path=str(tmp_path / "secret"))
    context = make_context(state_store)
    trigger = defer(op, context)
    _, kwargs = trigger.serialize()
    result = await finish(op, make_context(state_store), trigger)
    worker = operator(deferrable=False, output_path=str(tmp_path / "worker")).execute(make_context())
    seen = json.dumps([context["ti"].xcoms, dict(state_store), kwargs, result, worker], default=str)
    seen += repr(op) + repr(op.hook) + repr(trigger) + caplog.text + "".join(capsys.readouterr())
    assert emulator.api_key and emulator.api_key not in seen
    media = emulator.calls(endpoint="media")
    assert len(media) == 2 and not any(call["key_present"] for call in media)
    assert all(call["key_present"] for call in emulator.calls(endpoint="status"))
