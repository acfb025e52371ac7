"""Pay once: remember a request across tries, and re-attach to it instead of paying again.

The operators submit on the worker; the task's ``task_state_store`` (Airflow 3.3+) keeps, under a
fingerprint of what was asked, when a submit started (written BEFORE it is sent) and then the request
id it got. A retry that finds a live or finished request for the same fingerprint re-attaches to it;
one for another payload, a FAILED one or a gone one (results are kept an hour) is replaced.

Where no request id was kept, Segmind's request history (the account API) is the record, read only
inside the window of one uncertain submit (docs/reliability.md):

* a submit whose answer was lost (``SegmindSubmitUncertainError``) looks for its job among the rows
  created between its start and its end, for at most ``HISTORY_WAIT_SECONDS``;
* a retry whose earlier try started a submit and never kept its id (a worker lost mid-submit) looks
  once in that submit's window;
* a try that never got as far as an uncertain submit (a 429, a 4xx, a refused connection, an error
  before any byte left) leaves nothing to look up, and its retry looks nothing up;
* on Airflow 3.2 (no ``task_state_store``, so no window is known) a retry looks since the DAG run
  started, at most an hour back.

A row matches only when its inputs equal the payload sent; where two rows match, none is taken.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.account.history import (
    CLOCK_SKEW_SECONDS,
    HistoryWindow,
    parse_request_body,
    row_created,
    same_request,
    same_sent,
    sent_digest,
)
from segmind_provider.exceptions import SegmindError, SegmindNotFoundError, SegmindSubmitUncertainError
from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.hooks.errors import failure_reason, is_content_block
from segmind_provider.runtime import process_state
from segmind_provider.status import RequestStatus, read_status

if TYPE_CHECKING:
    from segmind_provider.hooks.api import SegmindApiHook

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "HISTORY_WAIT_SECONDS",
    "RESULT_LIFETIME_SECONDS",
    "STATE_STORE_KEY",
    "RequestJournal",
    "fingerprint",
    "parse_request_body",
    "retry_since",
    "row_created",
    "same_request",
]

#: The ``task_state_store`` key holding the live request across tries. Renaming it breaks in-flight retries.
STATE_STORE_KEY = "segmind_request"
#: Segmind keeps results an hour: an older request cannot be fetched, so no lookup reaches further back.
RESULT_LIFETIME_SECONDS = 3600.0
#: How long, after a lost submit answer, the request history is watched for the job.
HISTORY_WAIT_SECONDS = 30.0
#: Pauses between history lookups after a lost answer (cut to fit the wait).
HISTORY_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0)
#: History pages (of 100 rows, newest first) read before giving up on a busy key.
HISTORY_PAGES = 5

Attached = tuple[str, float, dict[str, Any]]
Row = tuple[float, dict[str, Any]]


def fingerprint(model: str, payload: Mapping[str, Any]) -> str:
    """Identify what was asked (model and payload), so a retry only re-attaches to the same request.

    Callers pass the payload as the user meant it: input files by their content's digest, not by
    the upload URL a given try happened to get.
    """
    text = json.dumps({"model": model, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def retry_since(context: Mapping[str, Any], now: float | None = None) -> float | None:
    """Since when a retry looks for its earlier tries' requests; None on a first try.

    The DAG run's start (less the clock skew), and never more than an hour back (results live an hour).
    """
    if int(getattr(context.get("ti"), "try_number", 1) or 1) <= 1:
        return None
    since = (time.time() if now is None else now) - RESULT_LIFETIME_SECONDS
    started = getattr(context.get("dag_run"), "start_date", None)
    if isinstance(started, dt.datetime):
        since = max(since, started.timestamp() - CLOCK_SKEW_SECONDS)
    return since


class RequestJournal:
    """One task's requests across its tries: re-attach when possible, else submit and remember.

    :param store: the task's ``task_state_store`` (None on Airflow 3.2, or with ``durable=False``).
    :param retry_since: on a retry, since when earlier tries may have submitted (:func:`retry_since`);
        read only without a store (Airflow 3.2), where no submit window is known. None on a first
        try or when retries must not re-attach (``durable=False``).
    """

    #: How long a lost submit answer is looked for in the request history (a journal whose runs the
    #: history does not list sets 0).
    history_wait: float = HISTORY_WAIT_SECONDS

    def __init__(
        self,
        hook: SegmindApiHook,
        model: str,
        store: Any,
        log: logging.Logger | Any,
        *,
        retry_since: float | None = None,
    ) -> None:
        self.hook = hook
        self.model = model
        self.store = store
        self.log = log
        self.retry_since = retry_since
        self._replaced: set[str] = set()  # this task's own requests found unusable: never re-attached
        if store is None:
            log.debug(
                "No task_state_store (Airflow < 3.3 or durable=False): a retry looks in the request history "
                "since the DAG run started"
            )

    @classmethod
    def for_task(
        cls, hook: SegmindApiHook, model: str, context: Mapping[str, Any], log: Any, *, durable: bool = True
    ) -> RequestJournal:
        """The journal of the task whose ``context`` this is (its store, and whether this is a retry)."""
        store = context.get("task_state_store") if durable else None
        return cls(hook, model, store, log, retry_since=retry_since(context) if durable else None)

    def attach_or_submit(
        self,
        payload: dict[str, Any],
        identity: Mapping[str, Any] | None = None,
        before_submit: Callable[[], None] | None = None,
    ) -> Attached:
        """Re-attach to the request a previous try left running or finished, else submit a new one.

        ``identity`` is the payload to fingerprint when it differs from the one sent (input files).
        ``before_submit`` runs only when a new request is about to be paid for (the credit floor).
        Returns ``(request_id, submitted_at, answer)``.
        """
        digest = fingerprint(self.model, payload if identity is None else identity)
        saved = self.store.get(STATE_STORE_KEY) if self.store is not None else None
        saved = saved if isinstance(saved, dict) else None
        ours = saved is not None and saved.get("fingerprint") == digest
        found: Attached | None = None
        if saved is not None and saved.get("request_id"):
            reused = self._reuse(saved) if ours else None
            if reused is not None:
                return reused  # already remembered
            if not ours:
                self.log.info(
                    "Stored request %s was for another payload; submitting fresh", saved["request_id"]
                )
        elif saved is not None and ours and saved.get("submit_started"):
            found = self._earlier_submit(payload, saved)
        elif self.store is None and self.retry_since is not None:
            found = self._earlier_try(payload)
        if found is not None:
            self.remember(self._record(found, digest))
            return found
        if before_submit is not None:
            before_submit()
        attached = self._submit(payload, digest)
        self.remember(self._record(attached, digest))
        return attached

    def remember(self, record: dict[str, Any]) -> None:
        """Keep ``record`` for the next try; a failing store never fails a job already paid for."""
        if self.store is None:
            return
        try:
            self.store.set(STATE_STORE_KEY, record)
        except Exception:
            self.log.warning(
                "Could not remember Segmind request %s in task_state_store; a retry of this task "
                "may submit again",
                record.get("request_id") or "(a submit about to be sent)",
                exc_info=True,
            )

    # ------------------------------------------------------------------ steps

    def _send_submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The paid call (a workflow's journal sends its own, ``operators.workflow``)."""
        return self.hook.submit(self.model, payload)

    def _read_status(self, request_id: str) -> dict[str, Any]:
        """The request's status answer; FAILED is returned, not raised."""
        return self.hook.get_status(request_id)

    def _record(self, attached: Attached, digest: str) -> dict[str, Any]:
        request_id, submitted_at, _ = attached
        return {
            "request_id": request_id,
            "model": self.model,
            "submitted_at": submitted_at,
            "fingerprint": digest,
        }

    def _submit(self, payload: dict[str, Any], digest: str) -> Attached:
        """Submit, with the submit's start kept first: a retry then knows the window to look in."""
        started = time.time()
        pending = {
            "model": self.model,
            "fingerprint": digest,
            "submit_started": started,
            "sent": sent_digest(payload),  # a retry's payload differs where it uploads its files again
        }
        self.remember(pending)
        try:
            answer = self._send_submit(payload)
        except SegmindSubmitUncertainError as exc:
            ended = time.time()
            self.remember({**pending, "submit_ended": ended})
            return self._recover(payload, started, ended, exc)
        except SegmindError:
            self.remember({"model": self.model, "fingerprint": digest})  # surely no job: nothing to look up
            raise
        # Stamped on the answer, not before the call: the submit may wait for the key's budget first,
        # and the poll schedule must be anchored on when Segmind got the job.
        submitted_at = time.time()
        request_id = str(answer["request_id"])
        self.log.info("Submitted Segmind request %s (model %s)", request_id, self.model)
        return request_id, submitted_at, answer

    def _reuse(self, saved: dict[str, Any]) -> Attached | None:
        """The stored request, unless it is gone or FAILED; a content block is kept (the same input
        is blocked again: the retry fails with its reason instead of paying for it again)."""
        request_id = str(saved["request_id"])
        submitted_at = float(saved.get("submitted_at") or time.time())
        attached = self._attach(request_id, submitted_at, accept_failed=True)
        if attached is not None and read_status(attached[2]) is RequestStatus.FAILED:
            reason = failure_reason(attached[2])
            if is_content_block(reason):
                self.log.info(
                    "Segmind request %s was content-blocked; not paying for the same input again", request_id
                )
                return attached
            self.log.info("Segmind request %s ended FAILED (%s)", request_id, reason)
            attached = None
        if attached is not None:
            return attached
        self._replaced.add(request_id)
        self.log.info("Stored request %s cannot be reused; submitting fresh", request_id)
        return None

    def _attach(self, request_id: str, submitted_at: float, *, accept_failed: bool) -> Attached | None:
        """The request's status when it can be waited on or fetched (FAILED too, if accepted).

        Only COMPLETED and FAILED end a request; any other status, one we do not know included, is live.
        """
        try:
            answer = self._read_status(request_id)
        except SegmindNotFoundError:
            self.log.info("Segmind request %s is gone (expired or unknown)", request_id)
            return None
        status = read_status(answer)
        if status is RequestStatus.COMPLETED:
            self.log.info("Segmind request %s already completed; fetching it without submitting", request_id)
        elif status is RequestStatus.FAILED and not accept_failed:
            self.log.info("Segmind request %s ended FAILED", request_id)
            return None
        elif status is not RequestStatus.FAILED:
            shown = answer.get("status") or "no status"
            self.log.info("Re-attaching to Segmind request %s (%s); not submitting again", request_id, shown)
        return request_id, submitted_at, answer

    def _earlier_submit(self, payload: dict[str, Any], saved: Mapping[str, Any]) -> Attached | None:
        """The job of an earlier try's submit that never kept its id, from the history rows of that
        submit's window (its start to its end, or to now when the try died mid-submit)."""
        started = float(saved["submit_started"])
        ended = float(saved.get("submit_ended") or time.time())
        self.log.info(
            "An earlier try started a %s submit at %s and kept no request id; looking for its job in "
            "Segmind's request history",
            self.model,
            _moment(started),
        )
        return self._one_earlier(payload, started, ended, sent=saved.get("sent"))

    def _earlier_try(self, payload: dict[str, Any]) -> Attached | None:
        """Airflow 3.2 (no store, so no submit window is known): an earlier try's request since the DAG
        run started."""
        assert self.retry_since is not None
        return self._one_earlier(payload, self.retry_since, time.time())

    def _one_earlier(
        self, payload: dict[str, Any], since: float, until: float, *, sent: str | None = None
    ) -> Attached | None:
        """The one live or completed request of this payload created in the window; none when two match.

        ``sent``: the :func:`sent_digest` of the payload the earlier try sent, where it was kept.
        """
        try:
            rows = [row for row in self._history(payload, since, until, sent=sent) if not _failed(row[1])]
        except SegmindError as exc:
            self.log.warning("Could not read Segmind's request history (%s); submitting fresh", exc)
            return None
        if len(rows) > 1:
            self._ambiguous(rows)
            return None
        for created, row in rows:
            attached = self._attach(str(row["request_id"]), created, accept_failed=False)
            if attached is not None:
                self.log.info("Found it in the request history: an earlier try's request, paid once")
                return attached
        self.log.info("No earlier try's %s request with this payload in the request history", self.model)
        return None

    def _ambiguous(self, rows: list[Row]) -> str:
        """Say that several requests match and none is taken; returns the sentence."""
        ids = ", ".join(str(row.get("request_id")) for _, row in rows)
        text = (
            f"{len(rows)} {self.model} requests with this payload were created in the window ({ids}): "
            "they cannot be told apart, so none is re-attached"
        )
        self.log.warning("%s", text)
        return text

    def _recover(
        self, payload: dict[str, Any], started: float, ended: float, exc: SegmindSubmitUncertainError
    ) -> Attached:
        """After a lost submit answer: the job, if the history shows it within the wait; else ``exc`` stands."""
        self.log.warning(
            "The answer to the %s submit was lost; looking for the job in Segmind's request history "
            "for up to %.0f s instead of paying again",
            self.model,
            self.history_wait,
        )
        problem = "no such request appeared"
        for pause in _pauses(self.history_wait):
            if pause:
                process_state().sleep(pause)
            try:
                rows = self._history(payload, started, ended)
            except SegmindError as error:
                problem = f"the history could not be read: {error}"
                continue
            if len(rows) > 1:
                problem = self._ambiguous(rows)
                break
            for created, row in rows:
                attached = self._attach(str(row["request_id"]), created, accept_failed=True)
                if attached is not None:
                    self.log.info(
                        "Request %s is the lost submit's job: re-attached, not paid twice", attached[0]
                    )
                    return attached
        account = self.hook.get_settings().account_url
        raise SegmindSubmitUncertainError(
            f"{exc.detail}. Segmind's request history ({account}) showed no {self.model} request with this payload "
            f"that can be taken for the submit's job, looking for {self.history_wait:.0f} s ({problem})",
            status_code=exc.status_code,
            request_id=exc.request_id,
        ) from exc

    def _history(
        self, payload: dict[str, Any], since: float, until: float, *, sent: str | None = None
    ) -> list[Row]:
        """``(created, row)`` for each history row of this model and payload created in the window
        (the payload whose :func:`sent_digest` is ``sent``, where given)."""
        window = HistoryWindow(
            self.hook, self.model, since, until, max_rows=HISTORY_PAGES * HISTORY_PAGE_SIZE
        )
        return [
            (created, row)
            for created, row in window
            if created is not None
            and str(row.get("request_id")) not in self._replaced
            and (same_request(row, self.model, payload) if sent is None else same_sent(row, self.model, sent))
        ]


def _failed(row: Mapping[str, Any]) -> bool:
    return read_status(row, "model_status") is RequestStatus.FAILED


def _moment(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _pauses(total: float) -> Iterator[float]:
    """0, then the pauses of HISTORY_PAUSES while they fit in ``total`` seconds (the last one cut)."""
    yield 0.0
    spent = 0.0
    for pause in HISTORY_PAUSES:
        if spent >= total:
            return
        step = min(pause, total - spent)
        spent += step
        yield step
