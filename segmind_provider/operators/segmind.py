"""SegmindOperator: from a DAG task to a stored image, holding no worker slot while Segmind works.

The journey: validate the payload and read the input files (no HTTP on a mistake),
upload or inline the input files, submit on the worker,
remember the request id (XCom and the task's ``task_state_store``), wait (in the
triggerer when deferrable, else in the worker, on the same poll schedule), fetch
the result, store the outputs. A retry reads the remembered request first, so a
try that died or timed out never pays for a second generation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, BaseOperator, BaseOperatorLink

from segmind_provider.account.spend import check_floor
from segmind_provider.catalog import (
    announce,
    expected_output_format,
    get_model,
    timeout_seconds,
    validate_payload,
)
from segmind_provider.destination import check_output_path
from segmind_provider.durable import STATE_STORE_KEY, RequestJournal
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.inputs import DEFAULT_MAX_INPUT_BYTES, InputFiles, read_input_files
from segmind_provider.lineage import operator_lineage
from segmind_provider.operators.batch import SegmindBatchOperator
from segmind_provider.outputs import DEFAULT_MAX_BYTES, store_bytes
from segmind_provider.task_defaults import DEFAULT_RETRIES, DEFAULT_RETRY_DELAY
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.wait import (
    finish_request,
    request_trigger,
    result_value,
    run_in_worker,
    store_outputs,
    task_deadline,
    terminal_event,
)

try:
    from airflow.providers.common.compat.sdk import conf
except ImportError:  # pragma: no cover - without the common.compat provider
    from airflow.configuration import conf

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey


__all__ = ["STATE_STORE_KEY", "SegmindBatchOperator", "SegmindOperator", "SegmindOutputLink"]

#: Extra time given to a deferral beyond the trigger's own deadline, so the trigger's timeout event
#: (which names the request id) arrives before Airflow's blunt TaskDeferralTimeout.
DEFER_GRACE_SECONDS = 60.0


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


class SegmindOutputLink(BaseOperatorLink):
    """Opens what lives as long as the run's record: the stored file when it is reachable over
    http(s), else the model's page on segmind.com (Segmind has no public page per request, and the
    output URL it returns expires after an hour)."""

    name = "Segmind output"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 computes links in the worker right after the try, on the operator that ran it:
        # read the result from there, which also avoids an XCom lookup after a deferral (no result yet).
        if hasattr(ti_key, "task"):
            return self.link_from_result(getattr(operator, "segmind_result", None))
        try:
            from airflow.providers.common.compat.sdk import XCom
        except ImportError:  # pragma: no cover
            from airflow.sdk.execution_time.xcom import XCom  # type: ignore[no-redef]

        return self.link_from_result(XCom.get_value(ti_key=ti_key, key="return_value"))

    @staticmethod
    def link_from_result(value: Any) -> str:
        """The link for one operator return value ("" when there is nothing to open)."""
        if not isinstance(value, dict):
            return ""
        for uri in value.get("output_uris") or []:
            if _is_http(uri):
                return str(uri)
        entry = get_model(str(value.get("model") or ""))
        return entry.page if entry is not None else ""


class SegmindOperator(BaseOperator):
    """Run one Segmind model request and store its output.

    :param model: the Segmind model slug, e.g. ``flux-1.1-pro`` (templated).
    :param payload: the model's JSON parameters (templated; Jinja inside values works).
    :param segmind_conn_id: the Segmind connection (API key, optional base URL; templated).
    :param output_path: where to store the output (templated): a local path or an ObjectStoragePath
        URI (``file://``, ``s3://``, ``memory://``...). Without an extension the content's one is
        appended; several outputs get ``-1``, ``-2``... None: nothing is downloaded.
    :param output_conn_id: the connection for ``output_path``'s storage (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: the longest gap between two status polls (see docs/operator.md).
    :param timeout: the whole wait for the job, seconds or a timedelta; None: 2.5 times the model's
        typical time (catalog entry or directory average), at least 600 s.
    :param validate: check the payload against the model's schema before any HTTP call.
    :param mode: ``"async"`` (the v2 queue) or ``"sync"`` (``POST /v1/{model}`` in the worker, quick models).
    :param durable: remember the request id across tries so a retry re-attaches instead of paying again
        (Airflow 3.3's ``task_state_store``; without one, a retry looks in Segmind's request history).
    :param retries: Airflow's retries; default ``task_defaults.DEFAULT_RETRIES`` (a retry re-attaches, never
        pays twice, and carries the task past Airflow's stale-executor race, apache/airflow#72716).
    :param retry_delay: the pause before a retry; default ``task_defaults.DEFAULT_RETRY_DELAY``.
    :param max_output_bytes: size cap for each stored output.
    :param expected_duration: typical submit-to-completion seconds, overriding the model's default for
        the poll schedule (a model without a default, or a time-scaled emulator).
    :param credit_floor: USD the balance must stay at or above after this submit (overrides the
        connection's ``credit_floor``); None: no check, no balance read.
    :param input_files: payload fields filled from files (templated): ``{field: source}``, a source
        being a local path, a ``file://`` URI or any ObjectStoragePath URI (``s3://``, ``memory://``...),
        or a list of them for a field that takes several. Read and checked before any paid call, then
        uploaded to Segmind storage (or inlined as base64 where the model's catalog entry says so);
        ``http(s)`` values pass through. See docs/inputs.md.
    :param input_conn_id: the connection for the ``input_files`` URIs' storage (templated).
    :param max_input_bytes: size cap for each input file.
    """

    template_fields: Sequence[str] = (
        "model",
        "payload",
        "segmind_conn_id",
        "output_path",
        "output_conn_id",
        "input_files",
        "input_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"payload": "json"}
    operator_extra_links = (SegmindOutputLink(),)
    ui_color = "#f5e6ff"

    def __init__(
        self,
        *,
        model: str,
        payload: dict[str, Any],
        segmind_conn_id: str = "segmind_default",
        output_path: Any = None,
        output_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta | None = None,
        validate: bool = True,
        mode: str = "async",
        durable: bool = True,
        max_output_bytes: int = DEFAULT_MAX_BYTES,
        expected_duration: float | None = None,
        credit_floor: float | None = None,
        input_files: dict[str, Any] | None = None,
        input_conn_id: str | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        retries: int | None = DEFAULT_RETRIES,
        retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
        **kwargs: Any,
    ) -> None:
        # Declared, not read from kwargs: Airflow fills them from default_args first, and .partial()
        # takes a class's defaults from its __init__ signature (segmind_provider.task_defaults says why).
        super().__init__(retries=retries, retry_delay=retry_delay, **kwargs)
        if mode not in ("async", "sync"):
            raise ValueError(f"mode must be 'async' or 'sync', got {mode!r}")
        seconds = timeout_seconds(timeout, model)
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.model = model
        self.payload = payload
        self.segmind_conn_id = segmind_conn_id
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = seconds
        self.validate = validate
        self.mode = mode
        self.durable = durable
        self.max_output_bytes = max_output_bytes
        self.expected_duration = expected_duration
        self.credit_floor = credit_floor
        self.input_files = input_files
        self.input_conn_id = input_conn_id
        self.max_input_bytes = max_input_bytes
        #: The last return value, for the extra link (links are computed on this object after the try).
        self.segmind_result: dict[str, Any] | None = None
        #: The input files' URIs this try read, for lineage.
        self.segmind_inputs: list[str] = []

    @cached_property
    def hook(self) -> SegmindHook:
        return SegmindHook(segmind_conn_id=self.segmind_conn_id)

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> dict[str, Any]:
        announce(self.model, self.log)
        payload = self._checked_payload()
        inputs = self._read_inputs(payload)
        if self.output_path:
            check_output_path(self.output_path, self._expected_format(), self.output_conn_id)

        def floor() -> None:
            check_floor(self.hook, self.credit_floor, self.model, payload, self.log)

        identity = None
        if inputs.fields:  # the fingerprint names files by content, so a retry's new upload URL still matches
            identity = inputs.identity(payload)
            payload = inputs.fill(payload, self.hook.upload)
        if self.mode == "sync":
            floor()
            return self._run_sync(context, payload)
        journal = RequestJournal.for_task(self.hook, self.model, context, self.log, durable=self.durable)
        request_id, submitted_at, answer = journal.attach_or_submit(
            payload, identity=identity, before_submit=floor
        )
        context["ti"].xcom_push(key="request_id", value=request_id)
        event = terminal_event(request_id, answer)
        if event is not None:
            return self.execute_complete(context, event)
        trigger = request_trigger(
            self.hook,
            request_id,
            model=self.model,
            payload=self.payload,
            submitted_at=submitted_at,
            end_time=time.time() + self.timeout,
            poll_interval=self.poll_interval,
            expected_duration=self.expected_duration,
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + max(DEFER_GRACE_SECONDS, 2 * self.poll_interval)),
            )
        return self.execute_complete(context, run_in_worker(trigger))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish from a trigger event (or an already-terminal answer): fetch, store, return the result."""
        result = finish_request(
            self.hook,
            event,
            model=self.model,
            payload=self.payload,
            output_path=self.output_path,
            output_conn_id=self.output_conn_id,
            max_bytes=self.max_output_bytes,
            deadline=task_deadline(self, context),
            logger=self.log,
        )
        return self._finish(context, result)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the input files and stored outputs as datasets, with the model and request id."""
        result = self.segmind_result or {}
        return operator_lineage(
            model=self.model,
            request_id=result.get("request_id"),
            inputs=self.segmind_inputs,
            outputs=result.get("output_uris") or [],
        )

    # ------------------------------------------------------------------ steps

    def _checked_payload(self) -> dict[str, Any]:
        """Validate before spending: a bad payload raises before any HTTP call."""
        if not self.validate:
            return dict(self.payload)

        files = self.input_files if isinstance(self.input_files, Mapping) else {}  # else refused when read
        return validate_payload(self.model, self.payload, filled_later=[str(name) for name in files])

    def _read_inputs(self, payload: dict[str, Any]) -> InputFiles:
        """Read and check the input files (no HTTP to Segmind): a bad file raises before anything is spent."""
        inputs = read_input_files(
            self.model,
            self.input_files,
            payload=payload,
            input_conn_id=self.input_conn_id,
            max_bytes=self.max_input_bytes,
        )
        for line in inputs.describe():
            self.log.info("Input file: %s", line)
        return inputs

    def _run_sync(self, context: Context, payload: dict[str, Any]) -> dict[str, Any]:
        """``mode="sync"``: ``POST /v1/{model}`` in the worker, the answer stored like an async output."""

        self.log.info(
            "Running %s synchronously (POST /v1/%s): the output comes in the answer, which carries no "
            "request id (the result's request_id is None)",
            self.model,
            self.model,
        )
        started = time.monotonic()
        result = self.hook.run(self.model, payload)
        uris: list[str] = []
        answer: Any = result.json
        output = answer.get("output", answer) if isinstance(answer, dict) else answer
        if self.output_path:
            if result.content is not None:
                uris = store_bytes(
                    result.content,
                    result.content_type,
                    self.output_path,
                    output_conn_id=self.output_conn_id,
                    expected_format=self._expected_format(),
                    max_bytes=self.max_output_bytes,
                )
            elif output is not None:
                uris = store_outputs(
                    self.hook,
                    output,
                    self.output_path,
                    model=self.model,
                    payload=self.payload,
                    output_conn_id=self.output_conn_id,
                    max_bytes=self.max_output_bytes,
                    deadline=task_deadline(self, context),
                )
        elif result.content is not None:
            self.log.warning(
                "mode='sync' without output_path: the %s answer is not kept", result.content_type
            )
        metrics: dict[str, Any] = {}
        if isinstance(answer, dict) and isinstance(answer.get("metrics"), dict):
            metrics = dict(answer["metrics"])
        self.log.info(
            "Segmind sync run of %s answered in %.1fs (%s); stored %s",
            self.model,
            time.monotonic() - started,
            result.content_type,
            ", ".join(uris) if uris else "nothing",
        )
        return self._finish(context, result_value(None, self.model, self.payload, output, uris, metrics))

    def _finish(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """Announce the stored files to the outlets; keep the return value for the extra link."""
        self._record_outlets(context, result["request_id"], result["output_uris"], result["cost"])
        self.segmind_result = result
        return result

    def _expected_format(self) -> str | None:
        return expected_output_format(self.model, self.payload)

    def _record_outlets(
        self, context: Context, request_id: str | None, uris: list[str], cost: float | None
    ) -> None:
        """Attach the stored URIs to each outlet asset's event, so consumers find the files."""
        outlets = [o for o in (self.outlets or []) if isinstance(o, Asset)]
        if not outlets:
            return
        events = context.get("outlet_events")
        if events is None:
            return
        for asset in outlets:
            extra = events[asset].extra
            extra["model"] = self.model
            extra["output_uris"] = list(uris)
            extra["cost"] = cost
            if request_id is not None:
                extra["request_id"] = request_id
