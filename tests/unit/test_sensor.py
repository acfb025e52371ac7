"""SegmindRequestSensor: waits on a request submitted elsewhere, poking or deferred."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

import pytest
from airflow.sdk import DAG, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred
from airflow.serialization.serialized_objects import DagSerialization

from segmind_provider.events import make_event
from segmind_provider.exceptions import (
    SegmindContentBlockedError,
    SegmindError,
    SegmindNotFoundError,
    SegmindTimeoutError,
)
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.sensors.segmind import (
    DEFAULT_SENSOR_RETRIES,
    SegmindRequestSensor,
)
from segmind_provider.task_defaults import DEFAULT_RETRIES, DEFAULT_RETRY_DELAY
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"


def submit(prompt: str = "a lighthouse at dawn") -> str:
    return str(SegmindHook().submit(FLUX, {"prompt": prompt})["request_id"])


def sensor(request_id: str, **kw: Any) -> SegmindRequestSensor:
    return SegmindRequestSensor(task_id="wait", request_id=request_id, poll_interval=0.05, **kw)


def test_poke_is_false_while_running_then_returns_the_result(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    emulator.configure(time_scale=1.0)
    request_id = submit()
    s = sensor(request_id)
    assert s.poke(make_context()) is False
    emulator.advance(20)  # simulated seconds: the job is done
    done = s.poke(make_context())
    assert isinstance(done, PokeReturnValue) and done.is_done
    result = done.xcom_value
    assert isinstance(result, dict)
    assert result["request_id"] == request_id and str(result["output"]).startswith("http")
    assert emulator.calls(endpoint="submit") and len(emulator.calls(endpoint="status")) == 2


@pytest.mark.segmind_emulator(blocked_words=["forbidden"])
def test_poke_raises_the_classified_failure(emulator: SegmindEmulator, make_context: Any) -> None:
    request_id = submit("a forbidden castle")
    time.sleep(0.1)
    with pytest.raises(SegmindContentBlockedError):
        for _ in range(100):
            sensor(request_id).poke(make_context())
            time.sleep(0.02)


def test_poke_on_an_unknown_request_raises(emulator: SegmindEmulator, make_context: Any) -> None:
    with pytest.raises(SegmindNotFoundError):
        sensor("00000000-0000-0000-0000-000000000000").poke(make_context())


async def test_deferrable_sensor_defers_to_the_same_trigger(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    emulator.configure(time_scale=0.05)
    request_id = submit()
    s = sensor(request_id, deferrable=True, timeout=120)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context())
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger) and trigger.request_id == request_id
    assert trigger.end_time >= before + 120
    (event,) = [e async for e in trigger.run()]
    result = s.execute_complete(make_context(), event.payload)
    assert result["request_id"] == request_id and result["status"] == "COMPLETED"


def test_deferrable_sensor_on_a_finished_request_returns_at_once(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    request_id = submit()
    emulator.advance(30)
    result = sensor(request_id, deferrable=True).execute(make_context())
    assert result["request_id"] == request_id


def test_execute_complete_event_kinds(make_context: Any) -> None:
    s = sensor("req-1")
    with pytest.raises(AirflowSensorTimeout) as info:  # final, as a poking sensor's timeout is
        s.execute_complete(make_context(), make_event("timeout", "req-1", "still QUEUED"))
    assert "req-1" in str(info.value) and isinstance(info.value.__cause__, SegmindTimeoutError)
    with pytest.raises(SegmindError):
        s.execute_complete(make_context(), make_event("error", "req-1", "HTTP 401"))
    with pytest.raises(SegmindContentBlockedError):
        s.execute_complete(make_context(), make_event("failed", "req-1", "NSFW content detected"))
    with pytest.raises(SegmindError):
        s.execute_complete(make_context(), {"status": "weird"})


def test_request_id_is_templated() -> None:
    s = sensor("{{ ti_id }}")
    assert "request_id" in s.template_fields
    context: Any = {"ti_id": "abc"}
    s.render_template_fields(context)
    assert s.request_id == "abc"


AIRFLOW_VERSION = tuple(int(part) for part in version("apache-airflow").split(".")[:2])


def _task_classes() -> list[tuple[type[Any], dict[str, Any], str, list[Any]]]:
    from segmind_provider.operators.batch import SegmindBatchOperator
    from segmind_provider.operators.segmind import SegmindOperator

    flux = {"model": "flux-1.1-pro"}
    return [
        (SegmindRequestSensor, {"request_id": "r"}, "request_id", ["r1", "r2"]),
        (SegmindOperator, {**flux, "payload": {"prompt": "a"}}, "payload", [{"prompt": "b"}]),
        (SegmindBatchOperator, {**flux, "payloads": [{"prompt": "a"}]}, "payloads", [[{"prompt": "b"}]]),
    ]


@pytest.mark.parametrize(
    ("cls", "args", "mapped", "values"), _task_classes(), ids=lambda v: getattr(v, "__name__", "")
)
def test_every_task_class_retries_by_default_so_the_stale_executor_event_race_does_not_fail_it(
    cls: type[Any], args: dict[str, Any], mapped: str, values: list[Any]
) -> None:
    """apache/airflow#72716 fails a task just after it resumed; the scheduler then retries it only
    if the task has retries (a retry of ours re-attaches: it never pays twice). Checked where the
    scheduler reads them: the serialized DAG."""
    assert DEFAULT_SENSOR_RETRIES == DEFAULT_RETRIES >= 1
    with DAG(f"{cls.__name__}_retries") as dag:
        cls(task_id="plain", **args)
        cls(task_id="own", retries=0, retry_delay=60, **args)
        fixed = {k: v for k, v in args.items() if k != mapped}
        cls.partial(task_id="mapped", **fixed).expand(**{mapped: values})
    with DAG(f"{cls.__name__}_default_args", default_args={"retries": 4}) as other:
        cls(task_id="from_default_args", **args)
    tasks = {
        t["__var"]["task_id"]: t["__var"]
        for d in (dag, other)
        for t in DagSerialization.to_dict(d)["dag"]["tasks"]
    }
    delay = DEFAULT_RETRY_DELAY.total_seconds()
    assert (tasks["plain"]["retries"], tasks["plain"]["retry_delay"]) == (DEFAULT_RETRIES, delay)
    assert tasks["own"].get("retries", 0) == 0  # the user's word wins (0 is left out as Airflow's default)
    assert tasks["own"]["retry_delay"] == 60.0
    assert tasks["from_default_args"]["retries"] == 4
    if AIRFLOW_VERSION >= (3, 3):
        assert tasks["mapped"]["partial_kwargs"]["retries"] == DEFAULT_RETRIES
    else:  # Airflow 3.2 serializes only the kwargs given to .partial(): there, pass retries yourself
        assert "retries" not in tasks["mapped"]["partial_kwargs"]
