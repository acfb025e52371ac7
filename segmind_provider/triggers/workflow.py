"""SegmindWorkflowTrigger: wait for a PixelFlow workflow run in the triggerer, read-only.

The run is submitted on the worker (``operators.workflow``); this trigger only reads its
``poll_url``. The decisions of the wait (schedule, transient errors, deadline, the event) are
``triggers.watch``'s, shared with the model trigger, so a workflow is waited on exactly like a
model request; the event also carries ``poll_url`` so the task reads the output from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.watch import DEFAULT_MAX_CONSECUTIVE_ERRORS, RequestWatch, watch_request

__all__ = ["SegmindWorkflowTrigger", "workflow_watch"]

log = logging.getLogger(__name__)


def workflow_watch(
    request_id: str,
    *,
    poll_interval: float,
    end_time: float,
    submitted_at: float,
    expected_duration: float | None,
    time_scale: float,
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
) -> RequestWatch:
    """The wait of one workflow run: no model, so its schedule comes from ``expected_duration`` or the interval."""
    return watch_request(
        request_id=request_id,
        model=None,
        poll_interval=poll_interval,
        end_time=end_time,
        submitted_at=submitted_at,
        expected_duration=expected_duration,
        time_scale=time_scale,
        max_consecutive_errors=max_consecutive_errors,
    )


class SegmindWorkflowTrigger(BaseTrigger):
    """Poll one workflow run's ``poll_url`` until it is COMPLETED, FAILED, or past ``end_time``.

    :param request_id: the run's ``request_id`` from the submit answer.
    :param poll_url: the run's ``poll_url`` (only followed on the connection's API host).
    :param segmind_conn_id: the connection holding the API key (never the key itself).
    :param poll_interval: the longest gap between two polls.
    :param end_time: absolute epoch deadline in seconds; a rebuilt trigger keeps it.
    :param submitted_at: epoch time of the submit, the anchor of the schedule (default: now).
    :param expected_duration: typical submit-to-completion seconds of the workflow; None: poll every
        ``poll_interval``.
    :param max_consecutive_errors: transient poll errors tolerated in a row before an ``error`` event.
    :param time_scale: the connection's ``time_scale`` extra (a time-scaled emulator).
    """

    def __init__(
        self,
        request_id: str,
        poll_url: str | None = None,
        segmind_conn_id: str = "segmind_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        submitted_at: float | None = None,
        expected_duration: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        now = time.time()
        self.request_id = request_id
        self.poll_url = poll_url
        self.segmind_conn_id = segmind_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else now + 1800.0
        self.submitted_at = float(submitted_at) if submitted_at is not None else now
        self.expected_duration = float(expected_duration) if expected_duration is not None else None
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.time_scale = float(time_scale)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids, a URL and numbers only: the kwargs are stored as plain JSON in the metadata database."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "poll_url": self.poll_url,
                "segmind_conn_id": self.segmind_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "submitted_at": self.submitted_at,
                "expected_duration": self.expected_duration,
                "max_consecutive_errors": self.max_consecutive_errors,
                "time_scale": self.time_scale,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until a terminal status or the deadline; yield exactly one event. Reads only."""
        watch = workflow_watch(
            self.request_id,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            submitted_at=self.submitted_at,
            expected_duration=self.expected_duration,
            time_scale=self.time_scale,
            max_consecutive_errors=self.max_consecutive_errors,
        )
        delay: dict[str, Any] | float = watch.start(time.time())
        while not isinstance(delay, dict):
            await asyncio.sleep(delay)
            hook = SegmindHook(segmind_conn_id=self.segmind_conn_id)  # holds nothing: one per poll
            try:
                answer = await hook.aget_workflow_status(self.request_id, self.poll_url)
            except Exception as exc:  # CancelledError is a BaseException: it still propagates
                delay = watch.on_error(exc, time.time())
            else:
                delay = watch.on_status(answer, time.time())
            news = watch.news()
            if news is not None:
                log.info("%s", news)
        log.info(
            "Segmind workflow run %s: %s after %d polls", self.request_id, delay["status"], delay["polls"]
        )
        yield TriggerEvent({**delay, "poll_url": self.poll_url})

    async def on_kill(self) -> None:
        """No cancel call is documented for workflow runs: say the run keeps going (and is billed)."""
        log.warning(
            "Segmind documents no cancel call for workflow runs: run %s keeps running and is billed",
            self.request_id,
        )
