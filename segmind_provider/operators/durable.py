"""Pay once: remember a request across tries, and re-attach to it instead of paying again.

The operators submit on the worker; the request id is kept in the task's ``task_state_store``
(Airflow 3.3+) right after the submit, under a fingerprint of what was asked. A retry that
finds a live or finished request for the same fingerprint re-attaches to it; one for another
payload, a FAILED one or a gone one (results are kept an hour) is replaced.

Where no request id was kept, Segmind's request history (the account API) is the record:

* a submit whose answer was lost (``SegmindSubmitUncertainError``) looks there for a request of
  the same model and payload created since just before the submit, for at most
  ``HISTORY_WAIT_SECONDS``; found, it re-attaches; not found, the uncertain error stands;
* a retry that finds no stored request id (Airflow 3.2 has no ``task_state_store``; a worker lost
  between submit and store) looks there once for an earlier try's live or completed request.

See docs/reliability.md for the matching rule.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.exceptions import SegmindError, SegmindNotFoundError, SegmindSubmitUncertainError
from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.runtime import process_state

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = [
    "ACTIVE_STATUSES",
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
ACTIVE_STATUSES = ("QUEUED", "PROCESSING")
#: Segmind keeps results an hour: an older request cannot be fetched, so no lookup reaches further back.
RESULT_LIFETIME_SECONDS = 3600.0
#: How far our clock and Segmind's may disagree when a history row's creation time is compared.
CLOCK_SKEW_SECONDS = 30.0
#: How long, after a lost submit answer, the request history is watched for the job.
HISTORY_WAIT_SECONDS = 30.0
#: Pauses between history lookups after a lost answer (cut to fit the wait).
HISTORY_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0)
#: History pages (of 100 rows, newest first) read before giving up on a busy key.
HISTORY_PAGES = 5
_CREATED_KEYS = ("created_at", "createdAt", "model_created", "created", "timestamp")

Attached = tuple[str, float, dict[str, Any]]


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


def parse_request_body(body: Any) -> dict[str, Any] | None:
    """A history row's ``request_body``: a dict, a JSON text or a Python literal text; None otherwise."""
    if isinstance(body, Mapping):
        return dict(body)
    if not isinstance(body, str):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _plain(value: Any) -> Any:
    """The value as JSON would carry it (tuples become lists), for comparing with a parsed body."""
    return json.loads(json.dumps(value, default=str))


def same_request(row: Mapping[str, Any], model: str, payload: Mapping[str, Any]) -> bool:
    """True when a history row is ``model`` with every parameter we sent, unchanged.

    Extra keys in the row's body are allowed (the server may record filled-in defaults).
    """
    if str(row.get("model_name") or "").strip().lower() != model.strip().lower():
        return False
    body = parse_request_body(row.get("request_body"))
    if body is None:
        return False
    sent = _plain(dict(payload))
    return all(key in body and _plain(body[key]) == value for key, value in sent.items())


def row_created(row: Mapping[str, Any]) -> float | None:
    """A history row's creation time (epoch seconds), from an ISO text or an epoch number."""
    for key in _CREATED_KEYS:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) / (1000.0 if value > 1e11 else 1.0)
        if isinstance(value, str) and value.strip():
            try:
                moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            return moment.timestamp()
    return None


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).date().isoformat()


class RequestJournal:
    """One task's requests across its tries: re-attach when possible, else submit and remember.

    :param store: the task's ``task_state_store`` (None on Airflow 3.2, or with ``durable=False``).
    :param retry_since: on a retry, since when earlier tries may have submitted (:func:`retry_since`);
        None on a first try or when retries must not re-attach (``durable=False``).
    :param history_wait: how long a lost submit answer is looked for in the request history.
    """

    def __init__(
        self,
        hook: SegmindHook,
        model: str,
        store: Any,
        log: logging.Logger | Any,
        *,
        retry_since: float | None = None,
        history_wait: float = HISTORY_WAIT_SECONDS,
    ) -> None:
        self.hook = hook
        self.model = model
        self.store = store
        self.log = log
        self.retry_since = retry_since
        self.history_wait = history_wait
        self._replaced: set[str] = set()  # this task's own requests found unusable: never re-attached
        if store is None:
            log.debug(
                "No task_state_store (Airflow < 3.3 or durable=False): retries look in the request history"
            )

    @classmethod
    def for_task(
        cls, hook: SegmindHook, model: str, context: Mapping[str, Any], log: Any, *, durable: bool = True
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
        saved = saved if isinstance(saved, dict) and saved.get("request_id") else None
        known = saved is not None and saved.get("fingerprint") == digest
        if saved is not None and known:
            reused = self._reuse(saved)
            if reused is not None:
                return reused
        elif saved is not None:
            self.log.info("Stored request %s was for another payload; submitting fresh", saved["request_id"])
        if not known and self.retry_since is not None:
            found = self._earlier_try(payload)
            if found is not None:
                self.remember(self._record(found, digest))
                return found
        if before_submit is not None:
            before_submit()
        attached = self._submit(payload)
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
                "Could not remember Segmind request %s in task_state_store; waiting for it anyway, "
                "but a retry of this task would submit again",
                record.get("request_id"),
                exc_info=True,
            )

    # ------------------------------------------------------------------ steps

    def _record(self, attached: Attached, digest: str) -> dict[str, Any]:
        request_id, submitted_at, _ = attached
        return {
            "request_id": request_id,
            "model": self.model,
            "submitted_at": submitted_at,
            "fingerprint": digest,
        }

    def _submit(self, payload: dict[str, Any]) -> Attached:
        started = time.time()
        try:
            answer = self.hook.submit(self.model, payload)
        except SegmindSubmitUncertainError as exc:
            return self._recover(payload, started, exc)
        # Stamped on the answer, not before the call: the submit may wait for the key's budget first,
        # and the poll schedule must be anchored on when Segmind got the job.
        submitted_at = time.time()
        request_id = str(answer["request_id"])
        self.log.info("Submitted Segmind request %s (model %s)", request_id, self.model)
        return request_id, submitted_at, answer

    def _reuse(self, saved: dict[str, Any]) -> Attached | None:
        request_id = str(saved["request_id"])
        submitted_at = float(saved.get("submitted_at") or time.time())
        attached = self._attach(request_id, submitted_at, accept_failed=False)
        if attached is not None:
            return attached
        self._replaced.add(request_id)
        self.log.info("Stored request %s cannot be reused; submitting fresh", request_id)
        return None

    def _attach(self, request_id: str, submitted_at: float, *, accept_failed: bool) -> Attached | None:
        """The request's status when it can be waited on or fetched (FAILED too, if accepted)."""
        try:
            answer = self.hook.get_status(request_id)
        except SegmindNotFoundError:
            self.log.info("Segmind request %s is gone (expired or unknown)", request_id)
            return None
        status = str(answer.get("status") or "").upper()
        if status in ACTIVE_STATUSES:
            self.log.info("Re-attaching to Segmind request %s (%s); not submitting again", request_id, status)
        elif status == "COMPLETED":
            self.log.info("Segmind request %s already completed; fetching it without submitting", request_id)
        elif not (accept_failed and status == "FAILED"):
            self.log.info("Segmind request %s ended %s", request_id, status or "unknown")
            return None
        return request_id, submitted_at, answer

    def _earlier_try(self, payload: dict[str, Any]) -> Attached | None:
        """An earlier try's live or completed request, from the history (no id was kept)."""
        assert self.retry_since is not None
        try:
            rows = [
                item
                for item in self._history(payload, self.retry_since)
                if str(item[1].get("model_status") or "").upper() != "FAILED"
            ]
        except SegmindError as exc:
            self.log.warning("Could not read Segmind's request history (%s); submitting fresh", exc)
            return None
        # A finished one first (nothing to wait for), then the newest.
        rows.sort(key=lambda item: (str(item[1].get("model_status")).upper() == "COMPLETED", item[0]))
        rows.reverse()
        for created, row in rows:
            attached = self._attach(str(row["request_id"]), created, accept_failed=False)
            if attached is not None:
                self.log.info("Found it in the request history: an earlier try's request, paid once")
                return attached
        self.log.info("No earlier try's %s request with this payload in the request history", self.model)
        return None

    def _recover(self, payload: dict[str, Any], started: float, exc: SegmindSubmitUncertainError) -> Attached:
        """After a lost submit answer: the job, if the history shows it within the wait; else ``exc`` stands."""
        since = started - CLOCK_SKEW_SECONDS
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
                rows = self._history(payload, since)
            except SegmindError as error:
                problem = f"the history could not be read: {error}"
                continue
            # The one created closest to our submit: another task's identical request came at another time.
            for created, row in sorted(rows, key=lambda item: abs(item[0] - started)):
                attached = self._attach(str(row["request_id"]), created, accept_failed=True)
                if attached is not None:
                    self.log.info(
                        "Request %s is the lost submit's job: re-attached, not paid twice", attached[0]
                    )
                    return attached
        account = self.hook.get_settings().account_url
        raise SegmindSubmitUncertainError(
            f"{exc.detail}. Segmind's request history ({account}) showed no {self.model} request with this "
            f"payload created since the submit, looking for {self.history_wait:.0f} s ({problem})",
            status_code=exc.status_code,
            request_id=exc.request_id,
        ) from exc

    def _history(self, payload: dict[str, Any], since: float) -> list[tuple[float, dict[str, Any]]]:
        """``(created, row)`` for each history row of this model and payload created at or after ``since``."""
        found: dict[str, tuple[float, dict[str, Any]]] = {}
        for page in range(1, HISTORY_PAGES + 1):
            rows = self.hook.request_history(
                model=self.model, from_date=_day(since), to_date=_day(time.time() + 86400.0), page=page
            )
            times = [row_created(row) for row in rows]
            for created, row in zip(times, rows, strict=True):
                request_id = str(row.get("request_id") or "")
                if created is None or created < since or request_id in self._replaced:
                    continue
                if request_id and same_request(row, self.model, payload):
                    found.setdefault(request_id, (created, row))  # one row per output: keep one
            known = [t for t in times if t is not None]
            if len(rows) < HISTORY_PAGE_SIZE or (known and min(known) < since):
                break
        return list(found.values())


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
