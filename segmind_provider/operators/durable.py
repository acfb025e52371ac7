"""Pay once: remember a request across tries, and re-attach to it instead of paying again.

The operators submit on the worker; the request id is kept in the task's ``task_state_store``
(Airflow 3.3+) right after the submit, under a fingerprint of what was asked. A retry that
finds a live or finished request for the same fingerprint re-attaches to it; one for another
payload, a FAILED one or a gone one (results are kept an hour) is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.exceptions import SegmindNotFoundError

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = ["ACTIVE_STATUSES", "STATE_STORE_KEY", "RequestJournal", "fingerprint"]

#: The ``task_state_store`` key holding the live request across tries. Renaming it breaks in-flight retries.
STATE_STORE_KEY = "segmind_request"
ACTIVE_STATUSES = ("QUEUED", "PROCESSING")


def fingerprint(model: str, payload: Mapping[str, Any]) -> str:
    """Identify what was asked (model and payload), so a retry only re-attaches to the same request.

    Callers pass the payload as the user meant it: input files by their content's digest, not by
    the upload URL a given try happened to get.
    """
    text = json.dumps({"model": model, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RequestJournal:
    """One task's requests across its tries: re-attach when possible, else submit and remember.

    :param store: the task's ``task_state_store`` (None on Airflow 3.2, or with ``durable=False``).
    """

    def __init__(self, hook: SegmindHook, model: str, store: Any, log: logging.Logger | Any) -> None:
        self.hook = hook
        self.model = model
        self.store = store
        self.log = log
        if store is None:
            log.debug("No task_state_store (Airflow < 3.3 or durable=False): a retry cannot re-attach")

    def attach_or_submit(
        self,
        payload: dict[str, Any],
        identity: Mapping[str, Any] | None = None,
        before_submit: Callable[[], None] | None = None,
    ) -> tuple[str, float, dict[str, Any]]:
        """Re-attach to the request a previous try left running or finished, else submit a new one.

        ``identity`` is the payload to fingerprint when it differs from the one sent (input files).
        ``before_submit`` runs only when a new request is about to be paid for (the credit floor).
        Returns ``(request_id, submitted_at, answer)``.
        """
        digest = fingerprint(self.model, payload if identity is None else identity)
        saved = self.store.get(STATE_STORE_KEY) if self.store is not None else None
        if isinstance(saved, dict) and saved.get("request_id"):
            reused = self._reuse(saved, digest)
            if reused is not None:
                return reused
        if before_submit is not None:
            before_submit()
        answer = self.hook.submit(self.model, payload)
        # Stamped on the answer, not before the call: the submit may wait for the key's budget first,
        # and the poll schedule must be anchored on when Segmind got the job.
        submitted_at = time.time()
        request_id = str(answer["request_id"])
        self.log.info("Submitted Segmind request %s (model %s)", request_id, self.model)
        self.remember(
            {
                "request_id": request_id,
                "model": self.model,
                "submitted_at": submitted_at,
                "fingerprint": digest,
            }
        )
        return request_id, submitted_at, answer

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

    def _reuse(self, saved: dict[str, Any], digest: str) -> tuple[str, float, dict[str, Any]] | None:
        request_id = str(saved["request_id"])
        if saved.get("fingerprint") != digest:
            self.log.info("Stored request %s was for another payload; submitting fresh", request_id)
            return None
        try:
            answer = self.hook.get_status(request_id)
        except SegmindNotFoundError:
            self.log.info("Stored request %s is gone (expired or unknown); submitting fresh", request_id)
            return None
        status = str(answer.get("status") or "").upper()
        submitted_at = float(saved.get("submitted_at") or time.time())
        if status in ACTIVE_STATUSES:
            self.log.info("Re-attaching to Segmind request %s (%s); not submitting again", request_id, status)
            return request_id, submitted_at, answer
        if status == "COMPLETED":
            self.log.info("Segmind request %s already completed; fetching it without submitting", request_id)
            return request_id, submitted_at, answer
        self.log.info("Stored request %s ended %s; submitting fresh", request_id, status or "unknown")
        return None
