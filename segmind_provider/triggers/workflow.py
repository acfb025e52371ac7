"""SegmindWorkflowTrigger: wait for a PixelFlow workflow run in the triggerer, read-only.

The run is submitted on the worker (``operators.workflow``); this trigger only reads its
``poll_url``. It is the model request's trigger with another read: the schedule, the tolerance of
transient errors, the absolute deadline and the event are ``SegmindRequestTrigger``'s and
``triggers.watch``'s, so a workflow is waited on exactly like a model request. The event also
carries ``poll_url``, where the task reads the output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.segmind import SegmindRequestTrigger
from segmind_provider.triggers.watch import DEFAULT_MAX_CONSECUTIVE_ERRORS

__all__ = ["SegmindWorkflowTrigger"]


class SegmindWorkflowTrigger(SegmindRequestTrigger):
    """Poll one workflow run's ``poll_url`` until it is COMPLETED, FAILED, or past ``end_time``.

    :param request_id: the run's ``request_id`` from the submit answer.
    :param poll_url: the run's ``poll_url`` (followed only on the connection's API host).
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
        super().__init__(
            request_id,
            segmind_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
            submitted_at=submitted_at,
            expected_duration=expected_duration,
            max_consecutive_errors=max_consecutive_errors,
            time_scale=time_scale,
        )
        self.poll_url = poll_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids, the poll URL and numbers only (no model, no workload: a workflow has neither)."""
        path, kwargs = super().serialize()
        del kwargs["model"], kwargs["workload"]
        return path, {**kwargs, "poll_url": self.poll_url}

    async def _read_status(self) -> dict[str, Any]:
        return await self._hook().aget_workflow_status(self.request_id, self.poll_url)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The request trigger's wait on the run's ``poll_url``; its one event also names ``poll_url``."""
        async for event in super().run():
            yield TriggerEvent({**event.payload, "poll_url": self.poll_url})
