"""The trigger-event contract shared by the operators, the sensor and the triggers.

A wait ends in exactly one event, a JSON dict (docs/architecture.md). This module
builds it, checks it, and turns a non-success event back into the error it stands
for (a FAILED request's, as ``hooks.errors`` maps it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segmind_provider import exceptions
from segmind_provider.exceptions import SegmindError, SegmindTimeoutError
from segmind_provider.hooks.errors import failure_error

__all__ = ["EVENT_STATUSES", "inference_time", "make_event", "raise_for_event"]

#: The only values an event's ``status`` takes.
EVENT_STATUSES = ("success", "failed", "timeout", "error")


def inference_time(answer: Mapping[str, Any]) -> float | None:
    """``metrics.inference_time`` as a float, when the answer carries a usable one."""
    metrics = answer.get("metrics") or {}
    value = metrics.get("inference_time") if isinstance(metrics, Mapping) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def make_event(
    status: str,
    request_id: str,
    message: str,
    *,
    inference_time: float | None = None,
    polls: int = 0,
    error_class: str | None = None,
) -> dict[str, Any]:
    """Build an event payload in the shape ``execute_complete`` expects.

    ``error_class`` (error events only) names the SegmindError subclass that ended the wait, so the
    worker raises the same kind: a bad key found while polling stops Airflow's retries too.
    """
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    event: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "message": message,
        "inference_time": inference_time,
        "polls": polls,
    }
    if error_class is not None:
        event["error_class"] = error_class
    return event


def _error_for_event(event: Mapping[str, Any], message: str, request_id: str) -> SegmindError:
    """Rebuild the error an ``error`` event names; anything unknown becomes a plain SegmindError."""
    cls = getattr(exceptions, str(event.get("error_class") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, SegmindError)):
        cls = SegmindError
    return cls(message or "waiting for the request failed", request_id=request_id)


def raise_for_event(event: Any, request_id: str | None = None) -> str:
    """Refuse a malformed event and raise the error a timeout/error/failed event stands for.

    Returns the request id of a success event. ``request_id`` (the sensor's own) is used in
    the errors when given, else the event's.
    """
    if (
        not isinstance(event, dict)
        or event.get("status") not in EVENT_STATUSES
        or not isinstance(event.get("request_id"), str)
    ):
        raise SegmindError(f"unexpected trigger event: {event!r}", request_id=request_id)
    request_id = request_id or event["request_id"]
    message = str(event.get("message") or "")
    status = event["status"]
    if status == "timeout":
        raise SegmindTimeoutError(message or "the deadline passed", request_id=request_id)
    if status == "error":
        raise _error_for_event(event, message, request_id)
    if status == "failed":
        raise failure_error(request_id, message)
    return request_id
