"""SegmindRequestTrigger: wait for a submitted Segmind request in the triggerer, read-only.

The submit happens on the worker (a POST made inside a trigger would be sent again
when a triggerer restarts); the trigger only reads the request's status. Its
kwargs hold ids and numbers only, never a key, and the deadline is an absolute
epoch time so a trigger rebuilt after a restart keeps the original one. The wait's
decisions live beside it in ``triggers.watch``; the event it yields is defined in
``segmind_provider.events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from segmind_provider.hooks.api import SegmindApiHook
from segmind_provider.runtime import process_state
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.watch import DEFAULT_MAX_CONSECUTIVE_ERRORS, watch_request

__all__ = ["SegmindRequestTrigger"]

log = logging.getLogger(__name__)


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
    :param time_scale: the connection's ``time_scale`` extra, read by the operator on the worker
        (a time-scaled emulator); scales the model's typical duration.
    :param workload: how much the payload asks relative to a default request (``triggers.workload``):
        picks the durations learned for its size and scales the model's typical duration.
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
        time_scale: float = 1.0,
        workload: float = 1.0,
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
        self.time_scale = float(time_scale)
        self.workload = float(workload)

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
                "time_scale": self.time_scale,
                "workload": self.workload,
            },
        )

    def _hook(self) -> SegmindApiHook:
        """A hook per call, not per wait: it holds nothing (settings and clients are per process)."""
        return SegmindApiHook(segmind_conn_id=self.segmind_conn_id)

    async def _read_status(self) -> dict[str, Any]:
        """One poll's answer (``triggers.workflow`` reads a workflow run's ``poll_url`` instead)."""
        return await self._hook().aget_status(self.request_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until a terminal status or the deadline; yield exactly one event. Reads only.

        Logs through the module's logger (the triggerer routes each line to this trigger's task
        log), only when something happens, and the end in one line: no logger object is held per
        wait, and a burst of thousands of waits ending together formats half the lines.
        """
        watch = watch_request(
            request_id=self.request_id,
            model=self.model,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            submitted_at=self.submitted_at,
            expected_duration=self.expected_duration,
            time_scale=self.time_scale,
            max_consecutive_errors=self.max_consecutive_errors,
            workload=self.workload,
            budget=process_state().cached_budget(self.segmind_conn_id),
        )
        delay = watch.start(time.time())
        while True:
            while delay > 0:
                await asyncio.sleep(delay)
                delay = watch.wake(time.time())
            try:
                answer = await self._read_status()
            except Exception as exc:  # CancelledError is a BaseException: it still propagates
                outcome = watch.on_error(exc, time.time())
            else:
                outcome = watch.on_status(answer, time.time())
            if watch.budget is None:  # the poll has read the connection: its key's budget is at hand
                watch.budget = process_state().cached_budget(self.segmind_conn_id)
            news = watch.news()
            if isinstance(outcome, dict):
                log.info(
                    "%s: %s after %d polls",
                    news or f"Segmind request {self.request_id}",
                    outcome["status"],
                    outcome["polls"],
                )
                yield TriggerEvent(outcome)
                return
            if news is not None:
                log.info("%s", news)
            delay = outcome

    async def on_kill(self) -> None:
        """Segmind has no cancel call: say so, so nobody expects the job (and its bill) to stop."""
        log.warning(
            "Segmind has no cancel endpoint: request %s keeps running and is billed; "
            "its result is kept for 1 hour",
            self.request_id,
        )
