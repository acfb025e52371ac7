"""SegmindBatchTrigger: one trigger watches every request of a batch's wave, read-only, one event per wave.

A batch of ten thousand images as ten thousand ``SegmindRequestTrigger``s is ten thousand
triggers, task instances and scheduler round trips; as one ``SegmindBatchOperator`` it is one
task and one trigger per wave. Each request is still watched with the same decisions as a single
trigger (``triggers.watch.RequestWatch``: the poll schedule, error tolerance, deadline), but as an
entry in one heap instead of a coroutine of its own, with at most ``MAX_CONCURRENT_POLLS`` polls
in flight. The trigger only reads (statuses through the hook's async calls) and yields exactly
one event: when every request has ended, or as soon as ``refill_after`` have (the worker stores
them and submits the next wave while the rest keep running); the polls already sent at that moment
are answered first, so the event carries every end they find.

``poll_endpoint="result"`` polls ``GET /v2/requests/{id}`` instead of the status endpoint: where
that answers non-final states with their status (the emulator does), a finished job's output comes
with its last poll and the separate result fetch is saved. Segmind does not document that
endpoint's answer before completion, so any other answer (404, 400, a body without a known status)
switches this trigger back to the status endpoint for good, and that poll is made there at once.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from segmind_provider.exceptions import SegmindBadRequestError, SegmindNotFoundError
from segmind_provider.hooks.api import SegmindApiHook
from segmind_provider.runtime import process_state
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL, estimate_duration
from segmind_provider.triggers.watch import DEFAULT_MAX_CONSECUTIVE_ERRORS, RequestWatch, watch_request

__all__ = ["POLL_ENDPOINTS", "WAVE_EVENT", "SegmindBatchTrigger"]

log = logging.getLogger(__name__)

WAVE_EVENT = "wave"
POLL_ENDPOINTS = ("status", "result")
#: Polls in flight at once; the hook's pool (50 sockets per loop) is the real bound, this one keeps the
#: number of pending poll tasks small however many requests the wave holds.
MAX_CONCURRENT_POLLS = 64
#: A finished job's output rides in the event only when it is this small (URLs): big inline data is
#: fetched by the worker instead of being stored in the metadata database.
INLINE_OUTPUT_LIMIT = 4096
#: Once the event is due, how long the polls already sent may take to answer before it is yielded.
DRAIN_SECONDS = 2.0
#: Watches set up between two yields to the event loop, so a wave of thousands never stalls it.
SETUP_SLICE = 500


def _inline_output(output: Any) -> Any:
    """The output if it is URL(s) small enough to carry in the event, else None (the worker fetches it)."""
    urls = output if isinstance(output, list) else [output]
    if not urls or not all(
        isinstance(u, str) and u.lower().startswith(("http://", "https://")) for u in urls
    ):
        return None
    return output if len(json.dumps(output)) <= INLINE_OUTPUT_LIMIT else None


class SegmindBatchTrigger(BaseTrigger):
    """Watch many Segmind requests at once; yield one event for the wave.

    :param requests: ``{request_id: [submitted_at, workload]}`` (epoch seconds; workload from
        ``triggers.workload``, 1.0 for a default request). Ids and numbers only: the kwargs are stored
        as plain JSON in the metadata database.
    :param model: the model slug, for its typical duration.
    :param segmind_conn_id: the connection holding the API key (never the key itself).
    :param poll_interval: the longest gap between two polls of one request.
    :param timeout: seconds from each request's submit to its deadline (absolute through
        ``submitted_at``, so a rebuilt trigger keeps them).
    :param refill_after: yield once this many requests have ended (default: all of them).
    :param expected_duration: typical seconds, overriding the model's (a model the catalog lacks).
    :param time_scale: the connection's ``time_scale`` extra (a time-scaled emulator).
    :param poll_endpoint: ``"status"`` (default) or ``"result"`` (see the module docstring).
    :param max_consecutive_errors: transient poll errors tolerated in a row per request.
    :param state: None where the task has a ``task_state_store`` (the batch's journal lives there,
        ``batch.journal``); on Airflow 3.2, the journal's values as JSON text (ids, paths, errors,
        costs; no payloads, no key), returned untouched in the event. Not in the deferral's
        ``next_kwargs``: ``airflow dags test`` replaces those with the event.
    """

    def __init__(
        self,
        requests: Mapping[str, Sequence[float]],
        model: str | None = None,
        segmind_conn_id: str = "segmind_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = 600.0,
        refill_after: int | None = None,
        expected_duration: float | None = None,
        time_scale: float = 1.0,
        poll_endpoint: str = "status",
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        state: str | None = None,
    ) -> None:
        super().__init__()
        if poll_endpoint not in POLL_ENDPOINTS:
            raise ValueError(f"poll_endpoint must be one of {POLL_ENDPOINTS}, got {poll_endpoint!r}")
        self.requests = {str(rid): [float(v) for v in value] for rid, value in requests.items()}
        self.model = model
        self.segmind_conn_id = segmind_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        total = len(self.requests)
        self.refill_after = total if refill_after is None else max(1, min(int(refill_after), total))
        self.expected_duration = float(expected_duration) if expected_duration is not None else None
        self.time_scale = float(time_scale)
        self.poll_endpoint = poll_endpoint
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.state = state

    def __repr__(self) -> str:
        """Short: the triggerer logs this, and the kwargs of a wave of thousands are long."""
        return (
            f"<{type(self).__qualname__} model={self.model} requests={len(self.requests)} "
            f"refill_after={self.refill_after} poll_endpoint={self.poll_endpoint}>"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "requests": self.requests,
                "model": self.model,
                "segmind_conn_id": self.segmind_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "refill_after": self.refill_after,
                "expected_duration": self.expected_duration,
                "time_scale": self.time_scale,
                "poll_endpoint": self.poll_endpoint,
                "max_consecutive_errors": self.max_consecutive_errors,
                "state": self.state,
            },
        )

    def expected_event_at(self) -> float | None:
        """When the event is likely due (epoch seconds): the ``refill_after``-th likely end, by the
        estimates the watches start from; None where some request has none (a model without a figure)."""
        observer = process_state().durations
        ends: list[float] = []
        for submitted_at, workload in self.requests.values():
            estimate = estimate_duration(
                self.model,
                observer=observer,
                expected_duration=self.expected_duration,
                time_scale=self.time_scale,
                workload=workload,
            )
            if estimate is None:
                return None
            ends.append(submitted_at + estimate.typical)
        return sorted(ends)[self.refill_after - 1] if ends else None

    async def _watches(self, patient: bool) -> dict[str, RequestWatch]:
        watches: dict[str, RequestWatch] = {}
        for index, (request_id, (submitted_at, workload)) in enumerate(self.requests.items(), start=1):
            watches[request_id] = watch_request(
                request_id=request_id,
                model=self.model,
                poll_interval=self.poll_interval,
                end_time=submitted_at + self.timeout,
                submitted_at=submitted_at,
                expected_duration=self.expected_duration,
                time_scale=self.time_scale,
                max_consecutive_errors=self.max_consecutive_errors,
                workload=workload,
                patient=patient,
            )
            if index % SETUP_SLICE == 0:
                await asyncio.sleep(0)
        return watches

    async def _patient(self, hook: SegmindApiHook) -> bool:
        """First polls past the high end of the expected range where a poll costs an image (a request limit)."""
        settings = await hook.aget_settings()
        return process_state().budget(settings).requests_per_minute is not None

    async def _poll(self, hook: SegmindApiHook, request_id: str, mode: list[str]) -> dict[str, Any]:
        """One poll, on the result endpoint while it answers as expected, else on the status endpoint."""
        if mode[0] == "result":
            why = ""
            try:
                answer = await hook.apoll_result(request_id)
                if read_status(answer) is not RequestStatus.UNKNOWN:
                    return answer
                why = f"an answer without a known status (keys {sorted(answer)[:6]})"
            except (SegmindNotFoundError, SegmindBadRequestError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if mode[0] == "result":
                mode[0] = "status"
                log.warning(
                    "Polling the result endpoint gave %s for request %s; polling the status endpoint from now on",
                    why,
                    request_id,
                )
        return await hook.aget_status(request_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll every request on its own schedule until the wave's event is due; yield it once. Reads only."""
        hook = SegmindApiHook(segmind_conn_id=self.segmind_conn_id)
        watches = await self._watches(await self._patient(hook))
        mode = [self.poll_endpoint]
        now = time.time()
        heap = [(now + watch.start(now), request_id) for request_id, watch in watches.items()]
        heapq.heapify(heap)
        ended: dict[str, dict[str, Any]] = {}
        running: dict[asyncio.Task[dict[str, Any]], str] = {}
        polls = 0
        log.info("Watching %d Segmind requests (%s endpoint)", len(watches), mode[0])
        try:
            while len(ended) < self.refill_after:
                now = time.time()
                self._launch_due(hook, mode, watches, heap, running, now)
                room = len(running) < MAX_CONCURRENT_POLLS
                wait = max(0.0, heap[0][0] - now) if heap and room else None
                if not running:
                    await asyncio.sleep(wait or 0.0)
                    continue
                done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    polls += 1
                    self._digest(task, watches, running.pop(task), heap, ended)
            # The event is due; the polls already sent answer first (none is added: a poll found still
            # running is a request spent), so a wave whose jobs all ended before it ran carries them all.
            if running:
                done, _ = await asyncio.wait(running, timeout=DRAIN_SECONDS)
                for task in done:
                    polls += 1
                    self._digest(task, watches, running.pop(task), heap, ended)
        finally:
            for task in running:
                task.cancel()
        completed = sum(1 for e in ended.values() if e["status"] == "success")
        message = (
            f"{len(ended)} of {len(self.requests)} Segmind requests ended ({completed} completed), "
            f"{len(self.requests) - len(ended)} still running, after {polls} polls"
        )
        log.info("%s", message)
        yield TriggerEvent(
            {
                "status": WAVE_EVENT,
                "ended": ended,
                "running": len(self.requests) - len(ended),
                "polls": polls,
                "poll_endpoint": mode[0],
                "message": message,
                "state": self.state,
            }
        )

    def _launch_due(
        self,
        hook: SegmindApiHook,
        mode: list[str],
        watches: dict[str, RequestWatch],
        heap: list[tuple[float, str]],
        running: dict[asyncio.Task[dict[str, Any]], str],
        now: float,
    ) -> None:
        """Start the polls due by ``now``, at most ``MAX_CONCURRENT_POLLS`` in flight."""
        while heap and heap[0][0] <= now and len(running) < MAX_CONCURRENT_POLLS:
            _, request_id = heapq.heappop(heap)
            later = watches[request_id].wake(now)
            if later > 0:
                heapq.heappush(heap, (now + later, request_id))
                continue
            running[asyncio.ensure_future(self._poll(hook, request_id, mode))] = request_id

    @staticmethod
    def _digest(
        task: asyncio.Task[dict[str, Any]],
        watches: dict[str, RequestWatch],
        request_id: str,
        heap: list[tuple[float, str]],
        ended: dict[str, dict[str, Any]],
    ) -> None:
        """Feed one poll's answer (or error) to its watch; record the request's end or schedule its next poll."""
        watch = watches[request_id]
        now = time.time()
        answer: dict[str, Any] | None = None
        try:
            answer = task.result()
        except Exception as exc:  # CancelledError is a BaseException: it still propagates
            outcome = watch.on_error(exc, now)
        else:
            outcome = watch.on_status(answer, now)
        news = watch.news()
        if news is not None:
            log.debug("%s", news)
        if not isinstance(outcome, dict):
            heapq.heappush(heap, (now + outcome, request_id))
            return
        del watches[request_id]
        # A success needs no message (the request id says it); a failure's is its reason.
        keys = (
            ("status", "inference_time", "polls")
            if outcome["status"] == "success"
            else ("status", "message", "inference_time", "polls", "error_class")
        )
        record = {k: outcome[k] for k in keys if k in outcome}
        if outcome["status"] == "success" and answer is not None:
            inline = _inline_output(answer.get("output"))
            if inline is not None:
                record["output"] = inline
        ended[request_id] = record
        if outcome["status"] != "success":
            log.info("Segmind request %s: %s: %s", request_id, outcome["status"], outcome["message"])
