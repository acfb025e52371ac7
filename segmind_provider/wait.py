"""Waiting for Segmind in the worker, and one request's whole journey from plain Python.

There is one wait: the trigger's. Whoever does not defer (the operators with ``deferrable=False``,
``SegmindApiHook.wait`` and ``SegmindApiHook.generate``) runs the trigger's own ``run()`` to its first
event on an event loop of the calling thread (:func:`run_in_worker`), so the poll schedule, the
tolerance of transient errors, the deadline and the event are the triggerer's, line for line.

Finishing a request (fetch the result, store and verify the outputs, the return value of
docs/architecture.md "Contract: operator return value") is written here once too, for the
operator's ``execute_complete`` and for :func:`generate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from segmind_provider.account.spend import check_floor
from segmind_provider.catalog import estimate_cost, expected_output_format, output_kind, validate_payload
from segmind_provider.chat import chat_of, is_text_model, read_chat
from segmind_provider.destination import check_output_path
from segmind_provider.durable import STATE_STORE_KEY, RequestJournal, fingerprint, retry_since
from segmind_provider.events import make_event, raise_for_event
from segmind_provider.exceptions import SegmindError
from segmind_provider.hooks.errors import failure_reason
from segmind_provider.outputs import DEFAULT_MAX_BYTES, store_output, store_text
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.segmind import SegmindRequestTrigger
from segmind_provider.triggers.workload import workload

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from segmind_provider.hooks.api import SegmindApiHook

__all__ = [
    "checked_request",
    "finish_request",
    "positive",
    "request_trigger",
    "result_value",
    "run_in_worker",
    "run_in_worker_within",
    "store_outputs",
    "submit_or_attach",
    "task_deadline",
    "terminal_event",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def run_in_worker(trigger: BaseTrigger) -> dict[str, Any]:
    """The trigger's first event, its ``run()`` driven here instead of in the triggerer.

    Called from a thread that already runs an event loop (an ``async def`` task), the wait runs on
    a loop of its own in a helper thread: the caller still blocks, as a worker wait does.
    """
    return _drive(_first_event(trigger))


def run_in_worker_within(trigger: BaseTrigger, seconds: float) -> dict[str, Any] | None:
    """:func:`run_in_worker`, giving up after ``seconds``: None if the event has not come by then
    (the trigger is cancelled as the triggerer cancels one; it only reads, so nothing is lost)."""

    async def bounded() -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(_first_event(trigger), seconds)
        except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
            return None

    return _drive(bounded())


async def _first_event(trigger: BaseTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise SegmindError(f"{type(trigger).__name__} ended without an event")


def _drive(wait: Coroutine[Any, Any, _T]) -> _T:
    """Run ``wait`` to its end on a loop of its own (in a helper thread where one already runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait)
    with ThreadPoolExecutor(1, thread_name_prefix="segmind-wait") as pool:
        return pool.submit(asyncio.run, wait).result()


def request_trigger(
    hook: SegmindApiHook,
    request_id: str,
    *,
    model: str | None,
    payload: Mapping[str, Any] | None,
    submitted_at: float,
    end_time: float,
    poll_interval: float | None = None,
    expected_duration: float | None = None,
) -> SegmindRequestTrigger:
    """The trigger that waits for one request, the same whether it is deferred to or run in the worker."""
    return SegmindRequestTrigger(
        request_id=request_id,
        segmind_conn_id=hook.segmind_conn_id,
        poll_interval=DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval,
        end_time=end_time,
        model=model,
        submitted_at=submitted_at,
        expected_duration=expected_duration,
        time_scale=hook.get_settings().time_scale,
        workload=workload(model, dict(payload)) if model and payload is not None else 1.0,
    )


def terminal_event(request_id: str, answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event for an answer that is already final (a re-attach to a finished request), else None."""
    status = read_status(answer)
    if status is RequestStatus.COMPLETED:
        return make_event("success", request_id, f"Segmind request {request_id} completed")
    if status is RequestStatus.FAILED:
        return make_event("failed", request_id, failure_reason(answer))
    return None


def task_deadline(operator: Any, context: Mapping[str, Any]) -> float | None:
    """When the task's ``execution_timeout`` ends (epoch seconds; it counts from the task's start
    date, deferral included): no download outlives it. None without one."""
    started = getattr(context.get("ti"), "start_date", None)
    timeout = getattr(operator, "execution_timeout", None)
    if timeout is None or started is None:
        return None
    return float(started.timestamp() + timeout.total_seconds())


def store_outputs(
    hook: SegmindApiHook,
    output: Any,
    output_path: Any,
    *,
    model: str,
    payload: Mapping[str, Any],
    output_conn_id: str | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> list[str]:
    """Download and store ``output`` at ``output_path``, checked against the model's format; [] without a path.

    A text model's output is written as UTF-8 (an LLM's: the assistant text, see :mod:`segmind_provider.chat`),
    a JSON model's as JSON; ``deadline`` (epoch seconds) bounds every download.
    """
    if not output_path:
        return []
    if is_text_model(model) or output_kind(model) == "json":
        text = read_chat(output)["text"] if is_text_model(model) else None
        return [store_text(output if text is None else text, output_path, output_conn_id=output_conn_id)]
    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    return store_output(
        output,
        output_path,
        download=lambda url, fileobj: hook.download(url, fileobj, max_bytes=cap, deadline=deadline),
        output_conn_id=output_conn_id,
        expected_format=expected_output_format(model, payload),
        max_bytes=cap,
    )


def result_value(
    request_id: str | None,
    model: str,
    payload: Mapping[str, Any],
    output: Any,
    uris: list[str],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The return value every path ends in (docs/architecture.md "Contract: operator return value").

    A text model's also carries ``chat``: its answer read into one shape whatever the vendor.
    """
    value = {
        "request_id": request_id,
        "model": model,
        "status": RequestStatus.COMPLETED.value,
        "output": output,
        "output_uris": uris,
        "metrics": metrics,
        # The catalog's price: the actual one is in the account's history, a request per image to read.
        "cost": estimate_cost(model, dict(payload)),
    }
    chat = chat_of(model, output)
    if chat is not None:
        value["chat"] = chat
    return value


def finish_request(
    hook: SegmindApiHook,
    event: dict[str, Any],
    *,
    model: str,
    payload: Mapping[str, Any],
    output_path: Any = None,
    output_conn_id: str | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
    logger: logging.Logger | Any = log,
) -> dict[str, Any]:
    """From a wait's event to the return value: raise for a failure, else fetch, store and verify."""
    request_id = raise_for_event(event)  # refuses a malformed event too
    result = hook.get_result(request_id)
    output = result.get("output")
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, dict):
        metrics = {"raw": metrics}
    if metrics.get("inference_time") is None and event.get("inference_time") is not None:
        metrics["inference_time"] = event["inference_time"]
    uris = store_outputs(
        hook,
        output,
        output_path,
        model=model,
        payload=payload,
        output_conn_id=output_conn_id,
        max_bytes=max_bytes,
        deadline=deadline,
    )
    logger.info(
        "Segmind request %s completed (inference %ss); stored %s",
        request_id,
        metrics.get("inference_time"),
        ", ".join(uris) if uris else "nothing (no output_path)",
    )
    return result_value(request_id, model, payload, output, uris, metrics)


def positive(*, timeout: float, poll_interval: float | None) -> float:
    """``timeout`` in seconds, refused (before any call) unless it and ``poll_interval`` are positive."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if poll_interval is not None and poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
    return float(timeout)


def checked_request(
    model: str,
    payload: Mapping[str, Any],
    output_path: Any,
    output_conn_id: str | None,
    *,
    validate: bool,
) -> dict[str, Any]:
    """The payload to send, after the checks that refuse a bad request before anything is spent."""
    checked = validate_payload(model, payload) if validate else dict(payload)
    if output_path:
        check_output_path(output_path, expected_output_format(model, checked), output_conn_id)
    return checked


class _Slot:
    """One ``task_state_store`` key per model and payload, so each of a task's calls pays once."""

    def __init__(self, store: Any, digest: str) -> None:
        self._store = store
        self._key = f"{STATE_STORE_KEY}:{digest[:16]}"

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(self._key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self._store.set(self._key, value, **kwargs)


def _running_context() -> Mapping[str, Any] | None:
    """The running task's context, or None outside a task (a script, a notebook)."""
    from airflow.sdk import get_current_context

    try:
        return get_current_context()
    except Exception:  # RuntimeError on Airflow 3; older SDKs raise their own AirflowException
        return None


def submit_or_attach(
    hook: SegmindApiHook,
    model: str,
    payload: dict[str, Any],
    *,
    durable: bool,
    credit_floor: float | None,
) -> tuple[str, float, dict[str, Any]]:
    """Submit once: inside a task, through its journal (a retry re-attaches), the credit floor checked first.

    Outside a task, or with ``durable=False``, nothing is remembered across calls; a lost submit
    answer is still looked for in the request history (``durable``).
    """
    context = _running_context() if durable else None
    store = context.get("task_state_store") if context is not None else None
    journal = RequestJournal(
        hook,
        model,
        _Slot(store, fingerprint(model, payload)) if store is not None else None,
        log,
        retry_since=retry_since(context) if context is not None else None,
    )
    return journal.attach_or_submit(
        payload, before_submit=lambda: check_floor(hook, credit_floor, model, payload, log)
    )
