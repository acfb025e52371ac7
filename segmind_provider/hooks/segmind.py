"""SegmindHook: Segmind's API (``hooks.api``) plus waiting on a request in the calling thread.

The hook users and the operators hold. ``wait`` and ``generate`` run ``SegmindRequestTrigger``'s own
wait here (``segmind_provider.wait``); the trigger itself polls through ``SegmindApiHook``, so the
trigger never imports this module and the two do not import each other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from segmind_provider import wait
from segmind_provider.events import raise_for_event
from segmind_provider.hooks.api import SegmindApiHook, SyncRunResult

__all__ = ["SegmindHook", "SyncRunResult"]


class SegmindHook(SegmindApiHook):
    """Talk to Segmind's serverless API (submit, poll, fetch, download; sync and async) and wait on it.

    :param segmind_conn_id: the ``segmind`` connection (password = API key, host = optional base URL).
    """

    def wait(
        self,
        request_id: str,
        *,
        timeout: float = 600.0,
        model: str | None = None,
        submitted_at: float | None = None,
        poll_interval: float | None = None,
        expected_duration: float | None = None,
    ) -> dict[str, Any]:
        """Block until a submitted request ends, on the trigger's poll schedule; return its result.

        The wait is ``SegmindRequestTrigger``'s own, run in this thread: the same polls, tolerance of
        transient errors and deadline as a deferred operator's.

        :param request_id: the id :meth:`submit` returned.
        :param timeout: seconds from now until the wait gives up with ``SegmindTimeoutError`` (the job
            keeps running; a later ``wait`` picks it up).
        :param model: the model slug, for its typical duration (the first poll near the expected end).
        :param submitted_at: epoch seconds of the submit, the schedule's anchor (default: now).
        :param poll_interval: the longest gap between two polls (None: the operators' default).
        :param expected_duration: typical submit-to-completion seconds, overriding the model's.
        :return: the result answer (``output``, ``metrics``...), as :meth:`get_result` gives it.
        :raises SegmindRequestFailedError: the job FAILED (``SegmindContentBlockedError`` for a blocked prompt).
        :raises SegmindTimeoutError: still running when ``timeout`` passed.
        """
        now = time.time()
        trigger = wait.request_trigger(
            self,
            request_id,
            model=model,
            payload=None,
            submitted_at=now if submitted_at is None else submitted_at,
            end_time=now + wait.positive(timeout=timeout, poll_interval=poll_interval),
            poll_interval=poll_interval,
            expected_duration=expected_duration,
        )
        event = wait.run_in_worker(trigger)
        result = self.get_result(raise_for_event(event))
        metrics = result.get("metrics")
        if isinstance(metrics, dict) and metrics.get("inference_time") is None:
            metrics["inference_time"] = event.get("inference_time")
        return result

    def generate(
        self,
        model: str,
        payload: Mapping[str, Any],
        *,
        timeout: float = 600.0,
        output_path: Any = None,
        output_conn_id: str | None = None,
        poll_interval: float | None = None,
        expected_duration: float | None = None,
        validate: bool = True,
        credit_floor: float | None = None,
        durable: bool = True,
        max_output_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Generate and wait in this thread: what ``SegmindOperator`` does, for plain Python code.

        Checks the payload and the output path before anything is paid for, then the credit floor;
        submits, or inside a running task re-attaches to the request an earlier try of that task
        paid for (its ``task_state_store``, one entry per model and payload); waits on the trigger's
        schedule; fetches; stores and verifies the outputs.

        :param model: the Segmind model slug, e.g. ``flux-1.1-pro``.
        :param payload: the model's JSON parameters.
        :param timeout: seconds from the submit until the wait gives up with ``SegmindTimeoutError``.
        :param output_path: where to store the output (a local path or an ObjectStoragePath URI, as the
            operator's); None: nothing is downloaded.
        :param output_conn_id: the connection for ``output_path``'s storage.
        :param poll_interval: the longest gap between two polls (None: the operators' default).
        :param expected_duration: typical submit-to-completion seconds, overriding the model's.
        :param validate: check the payload against the model's schema first.
        :param credit_floor: USD the balance must stay at or above (default: the connection's).
        :param durable: inside a task, remember the request so a retry re-attaches instead of paying again.
        :param max_output_bytes: size cap for each stored output (None: the operators' default).
        :return: the operator's return value: ``request_id``, ``model``, ``status``, ``output``,
            ``output_uris``, ``metrics``, ``cost`` (docs/architecture.md).
        """
        seconds = wait.positive(timeout=timeout, poll_interval=poll_interval)
        checked = wait.checked_request(model, payload, output_path, output_conn_id, validate=validate)
        request_id, submitted_at, answer = wait.submit_or_attach(
            self, model, checked, durable=durable, credit_floor=credit_floor
        )
        event = wait.terminal_event(request_id, answer)
        if event is None:
            trigger = wait.request_trigger(
                self,
                request_id,
                model=model,
                payload=checked,
                submitted_at=submitted_at,
                end_time=time.time() + seconds,
                poll_interval=poll_interval,
                expected_duration=expected_duration,
            )
            event = wait.run_in_worker(trigger)
        return wait.finish_request(
            self,
            event,
            model=model,
            payload=checked,
            output_path=output_path,
            output_conn_id=output_conn_id,
            max_bytes=max_output_bytes,
        )
