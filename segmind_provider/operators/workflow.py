"""SegmindWorkflowOperator: run a PixelFlow workflow published as an API, store its media outputs.

Submit on the worker (once per task instance: the run is remembered in the ``task_state_store`` by
``durable``'s journal, as a model request is), wait in the triggerer
(``triggers.workflow``), then read the output JSON from the run's ``poll_url``: each output that is an
http(s) URL (or a list of them) is stored under ``output_dir`` through ``segmind_provider.outputs``,
and the JSON itself is returned (XCom). See docs/workflows.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from segmind_provider.destination import check_output_path
from segmind_provider.durable import STATE_STORE_KEY, Attached, RequestJournal, retry_since
from segmind_provider.events import raise_for_event
from segmind_provider.exceptions import SegmindError, SegmindValidationError
from segmind_provider.hooks.connection import path_segment
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.hooks.workflows import check_inputs
from segmind_provider.outputs import DEFAULT_MAX_BYTES, store_output
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.workflow import SegmindWorkflowTrigger
from segmind_provider.wait import positive, run_in_worker, terminal_event

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context


__all__ = ["SegmindWorkflowOperator", "WorkflowJournal"]

#: Extra time Airflow gives a deferred task beyond its own deadline (the trigger's timeout event wins).
DEFER_GRACE_SECONDS = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class WorkflowJournal(RequestJournal):
    """Pay once for a workflow run: the model journal, sending the workflow's submit and reading its
    ``poll_url`` (kept in the record beside the request id).

    Segmind's request history is not documented to list workflow runs, so no run is looked up there:
    a submit whose answer was lost fails (``SegmindSubmitUncertainError``) instead of paying again.
    """

    history_wait = 0.0

    def __init__(
        self,
        hook: SegmindHook,
        workflow_id: str,
        store: Any,
        log: logging.Logger | Any,
        *,
        retry_since: float | None = None,
    ) -> None:
        super().__init__(hook, f"workflows/{workflow_id}", store, log, retry_since=retry_since)
        self.workflow_id = workflow_id
        self.poll_urls: dict[str, str] = {}
        saved = store.get(STATE_STORE_KEY) if store is not None else None
        if isinstance(saved, dict) and saved.get("request_id") and saved.get("poll_url"):
            self.poll_urls[str(saved["request_id"])] = str(saved["poll_url"])

    def _send_submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.hook.submit_workflow(self.workflow_id, payload)
        if answer.get("poll_url"):
            self.poll_urls[str(answer["request_id"])] = str(answer["poll_url"])
        return answer

    def _read_status(self, request_id: str) -> dict[str, Any]:
        return self.hook.get_workflow_status(request_id, self.poll_urls.get(request_id))

    def _record(self, attached: Attached, digest: str) -> dict[str, Any]:
        record = super()._record(attached, digest)
        record["poll_url"] = self.poll_urls.get(attached[0])
        return record

    def _history(
        self, payload: dict[str, Any], since: float, until: float, *, sent: str | None = None
    ) -> list[tuple[float, dict[str, Any]]]:
        return []


class SegmindWorkflowOperator(BaseOperator):
    """Run a Segmind PixelFlow workflow (published as an API) and store the media it outputs.

    Returns (XCom) ``{"request_id", "workflow_id", "status", "output", "output_uris"}``: ``output`` is
    the workflow's output JSON as Segmind gave it, ``output_uris`` maps each stored output's name to
    the URIs it was stored at.

    :param workflow_id: the workflow's API id, the last part of its API URL
        (``https://api.segmind.com/workflows/<workflow_id>``), e.g. ``672b3a0f8422a5baceb96168-v1`` (templated).
    :param inputs: the workflow's inputs by name, as its API page lists them (templated).
    :param output_dir: where to store the outputs that are media URLs (templated): a local folder or an
        ObjectStoragePath URI (``s3://bucket/dir``...); output ``name`` is stored as ``<output_dir>/<name>``
        with the content's extension (``-1``, ``-2``... for a list). None: nothing is downloaded.
    :param output_conn_id: the connection for ``output_dir``'s storage.
    :param segmind_conn_id: the Segmind connection (API key, optional base URL) (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: the longest gap between two polls of the run.
    :param timeout: the whole wait for the run, seconds or a timedelta.
    :param expected_duration: typical seconds from submit to completion, so the first polls come when
        the run is likely done; None: poll every ``poll_interval``.
    :param durable: remember the run across tries so a retry waits on it instead of paying again.
    :param max_output_bytes: size cap for each stored output.
    """

    template_fields: Sequence[str] = ("workflow_id", "inputs", "output_dir", "segmind_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"inputs": "json"}
    ui_color = "#f5e6ff"

    def __init__(
        self,
        *,
        workflow_id: str,
        inputs: dict[str, Any] | None = None,
        output_dir: Any = None,
        output_conn_id: str | None = None,
        segmind_conn_id: str = "segmind_default",
        deferrable: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = 1800,
        expected_duration: float | None = None,
        durable: bool = True,
        max_output_bytes: int = DEFAULT_MAX_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        seconds = positive(
            timeout=timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout),
            poll_interval=poll_interval,
        )
        self.workflow_id = workflow_id
        self.inputs = inputs
        self.output_dir = output_dir
        self.output_conn_id = output_conn_id
        self.segmind_conn_id = segmind_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = seconds
        self.expected_duration = expected_duration
        self.durable = durable
        self.max_output_bytes = max_output_bytes

    @cached_property
    def hook(self) -> SegmindHook:
        return SegmindHook(segmind_conn_id=self.segmind_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        inputs = self._checked()
        store = context.get("task_state_store") if self.durable else None
        since = retry_since(context) if self.durable else None
        journal = WorkflowJournal(self.hook, self.workflow_id, store, self.log, retry_since=since)
        request_id, submitted_at, answer = journal.attach_or_submit(inputs)
        poll_url = journal.poll_urls.get(request_id)
        context["ti"].xcom_push(key="request_id", value=request_id)
        event = terminal_event(request_id, answer)
        if event is not None:  # re-attached to a run that already ended
            return self.execute_complete(context, {**event, "poll_url": poll_url})
        trigger = SegmindWorkflowTrigger(
            request_id=request_id,
            poll_url=poll_url,
            segmind_conn_id=self.segmind_conn_id,
            poll_interval=self.poll_interval,
            end_time=time.time() + self.timeout,
            submitted_at=submitted_at,
            expected_duration=self.expected_duration,
            time_scale=self.hook.get_settings().time_scale,
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + max(DEFER_GRACE_SECONDS, 2 * self.poll_interval)),
            )
        # Not deferrable: the same read-only wait, on this worker's own event loop.
        return self.execute_complete(context, run_in_worker(trigger))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish from the trigger's event: read the output from the poll URL, store its media, return it."""
        request_id = raise_for_event(event)
        answer = self.hook.get_workflow_status(request_id, event.get("poll_url"))
        if read_status(answer) is not RequestStatus.COMPLETED:
            raise SegmindError(
                f"workflow run {request_id} answered {answer.get('status') or 'no status'} after completing",
                request_id=request_id,
            )
        output = answer.get("output")
        uris = self._store(output)
        stored = sum(len(v) for v in uris.values())
        self.log.info(
            "Segmind workflow %s run %s completed; stored %s",
            self.workflow_id,
            request_id,
            f"{stored} output(s) under {self.output_dir}"
            if uris
            else "nothing (no output_dir or no media URL)",
        )
        return {
            "request_id": request_id,
            "workflow_id": self.workflow_id,
            "status": RequestStatus.COMPLETED.value,
            "output": output,
            "output_uris": uris,
        }

    # ------------------------------------------------------------------ steps

    def _checked(self) -> dict[str, Any]:
        """Refuse what cannot work before any call: the id, the inputs, the output folder."""
        path_segment(self.workflow_id, "workflow_id")
        if "/" in str(self.workflow_id):
            raise SegmindValidationError(
                f"workflow_id {self.workflow_id!r} must be the id alone (the last part of the workflow's "
                "API URL), not a URL or path"
            )
        inputs = check_inputs(self.inputs)
        if self.output_dir:
            check_output_path(f"{str(self.output_dir).rstrip('/')}/output", None, self.output_conn_id)
        return inputs

    def _store(self, output: Any) -> dict[str, list[str]]:
        """Store each output that is a media URL (or a list of them) as ``<output_dir>/<name>``."""
        if not self.output_dir:
            return {}

        hook, max_bytes = self.hook, self.max_output_bytes
        named = output if isinstance(output, Mapping) else {"output": output}
        uris: dict[str, list[str]] = {}
        for name, value in named.items():
            if not _is_media_url(value):
                continue
            stem = _UNSAFE.sub("_", str(name)).strip("_") or "output"
            uris[str(name)] = store_output(
                value,
                f"{str(self.output_dir).rstrip('/')}/{stem}",
                download=lambda url, fileobj: hook.download(url, fileobj, max_bytes=max_bytes),
                output_conn_id=self.output_conn_id,
                max_bytes=max_bytes,
            )
        return uris


def _is_media_url(value: Any) -> bool:
    """An http(s) URL, or a non-empty list of them: what a workflow's media output looks like."""
    if isinstance(value, list):
        return bool(value) and all(_is_media_url(item) for item in value)
    return isinstance(value, str) and value.startswith(("http://", "https://"))
