"""SegmindRequestTrigger: wait for a submitted Segmind request in the triggerer, read-only.

The submit happens on the worker (a POST made inside a trigger would be sent again
when a triggerer restarts); the trigger only reads the request's status. Its
kwargs hold ids and numbers only, never a key, and the deadline is an absolute
epoch time so a trigger rebuilt after a restart keeps the original one.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from segmind_provider.exceptions import (
    SegmindContentBlockedError,
    SegmindError,
    SegmindRateLimitError,
    SegmindRequestFailedError,
    SegmindServerError,
    SegmindTimeoutError,
    SegmindTransportError,
)
from segmind_provider.triggers.polling import (
    DEFAULT_POLL_INTERVAL,
    OBSERVED_DURATIONS,
    SHARED_RNG,
    DurationObserver,
    PollSchedule,
    error_delay,
    estimate_duration,
    observed_duration,
)

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_ERRORS",
    "EVENT_STATUSES",
    "TRANSIENT_ERRORS",
    "RequestWatch",
    "SegmindRequestTrigger",
    "failure_error",
    "failure_reason",
    "make_event",
    "raise_for_event",
    "shared_hook",
]

#: The only values an event's ``status`` takes.
EVENT_STATUSES = ("success", "failed", "timeout", "error")
#: Errors worth another poll: the hook already retried them, the trigger tolerates a short run more.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)
DEFAULT_MAX_CONSECUTIVE_ERRORS = 5


def make_event(
    status: str,
    request_id: str,
    message: str,
    *,
    inference_time: float | None = None,
    polls: int = 0,
    error_class: str | None = None,
) -> dict[str, Any]:
    """Build an event payload in the shape ``execute_complete`` expects (docs/architecture.md).

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


def _error_for_event(event: dict[str, Any], message: str, request_id: str) -> SegmindError:
    """Rebuild the error an ``error`` event names; anything unknown becomes a plain SegmindError."""
    from segmind_provider import exceptions

    cls = getattr(exceptions, str(event.get("error_class") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, SegmindError)):
        cls = SegmindError
    return cls(message or "waiting for the request failed", request_id=request_id)


def failure_error(request_id: str, reason: str | None) -> SegmindRequestFailedError:
    """The exception for a FAILED request: a content block is not worth a retry, other failures may be."""
    from segmind_provider.hooks.segmind import is_content_block

    text = reason or "the request ended FAILED"
    cls = SegmindContentBlockedError if is_content_block(text) else SegmindRequestFailedError
    return cls(text, request_id=request_id)


def _inference_time(answer: dict[str, Any]) -> float | None:
    metrics = answer.get("metrics") or {}
    value = metrics.get("inference_time") if isinstance(metrics, dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def failure_reason(answer: dict[str, Any]) -> str:
    """The API's reason for a FAILED answer (``error``, ``detail`` or ``message``)."""
    for key in ("error", "detail", "message"):
        value = answer.get(key)
        if value:
            return str(value)
    return "the request ended FAILED without a reason"


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


#: How long triggers of one event loop share a hook (one connection lookup) before reading it afresh.
SHARED_HOOK_TTL = 300.0
_SHARED_HOOKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[SegmindHook, float]]] = (
    weakref.WeakKeyDictionary()
)


def shared_hook(segmind_conn_id: str) -> SegmindHook:
    """The running loop's hook for a connection, shared by all its triggers for ``SHARED_HOOK_TTL``.

    A hook per trigger meant a connection lookup per trigger: with 500 waits in one
    triggerer that churn alone set off full garbage collections that stalled the loop
    for 100-200 ms (bench/trigger_stall.py). Shared, it is one lookup per connection
    every few minutes, and a rotated key is still picked up.
    """
    from segmind_provider.hooks.segmind import SegmindHook

    loop = asyncio.get_running_loop()
    per_loop = _SHARED_HOOKS.get(loop)
    if per_loop is None:
        per_loop = _SHARED_HOOKS[loop] = {}
    now = time.monotonic()
    entry = per_loop.get(segmind_conn_id)
    if entry is None or now - entry[1] > SHARED_HOOK_TTL:
        entry = (SegmindHook(segmind_conn_id=segmind_conn_id), now)
        per_loop[segmind_conn_id] = entry
    return entry[0]


class RequestWatch:
    """The decisions of one wait, without I/O: what to do after each poll's outcome.

    Shared by the trigger (async), the operator's worker loop and the benches, so
    every path spends requests the same way and ends in the same event shape.
    ``start``/``on_status``/``on_error`` return either seconds to sleep before the
    next poll or a final event dict.
    """

    __slots__ = (
        "_last_poll_at",
        "_observer",
        "_rng",
        "consecutive_errors",
        "end_time",
        "last_status",
        "max_consecutive_errors",
        "model",
        "poll_interval",
        "polls",
        "request_id",
        "schedule",
        "submitted_at",
    )

    def __init__(
        self,
        *,
        request_id: str,
        model: str | None,
        poll_interval: float,
        end_time: float,
        submitted_at: float,
        expected_duration: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        rng: random.Random | None = None,
        observer: DurationObserver = OBSERVED_DURATIONS,
    ) -> None:
        self.request_id = request_id
        self.model = model
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self.submitted_at = float(submitted_at)
        self.max_consecutive_errors = max_consecutive_errors
        self._rng = rng or SHARED_RNG
        self._observer = observer
        self.schedule = PollSchedule(
            submitted_at=self.submitted_at,
            poll_interval=self.poll_interval,
            estimate=estimate_duration(model, expected_duration=expected_duration, observer=observer),
            rng=self._rng,
        )
        self.polls = 0
        self.consecutive_errors = 0
        self.last_status: str | None = None
        self._last_poll_at: float | None = None

    def _sleep_until(self, at: float, now: float) -> float:
        return max(0.0, min(at, self.end_time) - now)

    def start(self, now: float) -> float:
        """Seconds until the first poll (0 when a rebuilt trigger is already past it)."""
        return self._sleep_until(self.schedule.next_poll_at(now, None), now)

    def _timeout(self, now: float) -> dict[str, Any]:
        state = self.last_status or "not yet seen"
        return make_event(
            "timeout",
            self.request_id,
            f"Segmind request {self.request_id} was still {state} when the deadline passed "
            f"({now - self.submitted_at:.0f}s after submit); a retry re-attaches to it without paying "
            f"again, and a longer timeout suits a slower model",
            polls=self.polls,
        )

    def on_status(self, answer: dict[str, Any], now: float) -> dict[str, Any] | float:
        """Digest one status answer (a FAILED answer is returned by the hook, not raised)."""
        previous_poll, self._last_poll_at = self._last_poll_at, now
        self.polls += 1
        self.consecutive_errors = 0
        status = str(answer.get("status") or "").upper()
        self.last_status = status or None
        if status == "COMPLETED":
            inference = _inference_time(answer)
            # After a QUEUED spell the start is only known to within a poll interval: a cold start
            # says little about the model's usual duration, so only clean runs are remembered.
            if self.model and not self.schedule.reanchored:
                self._observer.observe(
                    self.model,
                    observed_duration(
                        anchor=self.schedule.anchor,
                        detected_at=now,
                        previous_poll_at=previous_poll,
                        inference_time=inference,
                    ),
                )
            return make_event(
                "success",
                self.request_id,
                f"Segmind request {self.request_id} completed",
                inference_time=inference,
                polls=self.polls,
            )
        if status == "FAILED":
            return make_event(
                "failed",
                self.request_id,
                failure_reason(answer),
                inference_time=_inference_time(answer),
                polls=self.polls,
            )
        if now >= self.end_time:
            return self._timeout(now)
        return self._sleep_until(self.schedule.next_poll_at(now, status), now)

    def on_error(self, exc: BaseException, now: float) -> dict[str, Any] | float:
        """Digest a failed poll: a short run of transient errors is waited out, anything else ends the wait."""
        self.polls += 1
        if not isinstance(exc, TRANSIENT_ERRORS):
            text = str(exc) if str(exc) else type(exc).__name__
            return make_event(
                "error",
                self.request_id,
                f"polling Segmind request {self.request_id} failed: {type(exc).__name__}: {text}",
                polls=self.polls,
                error_class=type(exc).__name__ if isinstance(exc, SegmindError) else None,
            )
        self.consecutive_errors += 1
        if self.consecutive_errors > self.max_consecutive_errors:
            return make_event(
                "error",
                self.request_id,
                f"polling Segmind request {self.request_id} failed {self.consecutive_errors} times "
                f"in a row; last: {type(exc).__name__}: {exc}",
                polls=self.polls,
            )
        if now >= self.end_time:
            return self._timeout(now)
        retry_after = getattr(exc, "retry_after", None)
        delay = error_delay(self.consecutive_errors, self.poll_interval, retry_after, self._rng)
        return self._sleep_until(now + delay, now)


class SegmindRequestTrigger(BaseTrigger):
    """Poll one Segmind request's status until it is done, failed, or past ``end_time``.

    :param request_id: the Segmind v2 request id.
    :param segmind_conn_id: the connection holding the API key (never the key itself).
    :param poll_interval: the longest gap between two polls (cold models, overruns, unknown models).
    :param end_time: absolute epoch deadline in seconds; a rebuilt trigger keeps it.
    :param model: the model slug, for its typical duration; optional.
    :param submitted_at: epoch time of the submit, the anchor of the schedule (default: now).
    :param expected_duration: typical submit-to-completion seconds, overriding the model's default
        (e.g. for a model without one, or a time-scaled emulator).
    :param max_consecutive_errors: transient poll errors tolerated in a row before an ``error`` event.
    """

    def __init__(
        self,
        request_id: str,
        segmind_conn_id: str = "segmind_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        model: str | None = None,
        submitted_at: float | None = None,
        expected_duration: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    ) -> None:
        super().__init__()
        now = time.time()
        self.request_id = request_id
        self.segmind_conn_id = segmind_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else now + 600.0
        self.model = model
        self.submitted_at = float(submitted_at) if submitted_at is not None else now
        self.expected_duration = float(expected_duration) if expected_duration is not None else None
        self.max_consecutive_errors = int(max_consecutive_errors)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids and numbers only: the kwargs are stored as plain JSON in the metadata database."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "segmind_conn_id": self.segmind_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "model": self.model,
                "submitted_at": self.submitted_at,
                "expected_duration": self.expected_duration,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def _hook(self) -> SegmindHook:
        return shared_hook(self.segmind_conn_id)

    def _watch(self) -> RequestWatch:
        return RequestWatch(
            request_id=self.request_id,
            model=self.model,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            submitted_at=self.submitted_at,
            expected_duration=self.expected_duration,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until a terminal status or the deadline; yield exactly one event. Reads only."""
        watch = self._watch()
        # No log line before the end: a trigger's logger is a dozen objects, held for the whole wait.
        delay = watch.start(time.time())
        while True:
            if delay > 0:
                self._hook().expect_poll(delay)
                await asyncio.sleep(delay)
            try:
                # Looked up after the sleep, so a wait of minutes picks up a re-read connection.
                answer = await self._hook().aget_status(self.request_id)
            except Exception as exc:  # CancelledError is a BaseException: it still propagates
                outcome = watch.on_error(exc, time.time())
            else:
                outcome = watch.on_status(answer, time.time())
            if isinstance(outcome, dict):
                self.log.info(
                    "Segmind request %s: %s after %d polls",
                    self.request_id,
                    outcome["status"],
                    outcome["polls"],
                )
                yield TriggerEvent(outcome)
                return
            delay = outcome

    async def cleanup(self) -> None:
        """Nothing to undo: the trigger holds no resource of its own (the hook's pool is per loop)."""

    async def on_kill(self) -> None:
        """Segmind has no cancel call: say so, so nobody expects the job (and its bill) to stop."""
        self.log.warning(
            "Segmind has no cancel endpoint: request %s keeps running and is billed; "
            "its result is kept for 1 hour",
            self.request_id,
        )
