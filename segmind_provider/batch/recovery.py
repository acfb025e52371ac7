"""A batch's recovery: what earlier runs and tries paid for is reused or re-attached, never paid again.

Three sources, most precise first: the task's ``task_state_store`` (a record per submit, written in
groups, Airflow 3.3+), the manifest's entries still RUNNING (written at each wave, any version,
across runs), and the account's request history for the few submits a killed try sent but never recorded (its last round's
requests whose answers were on their way, and submits whose answers were lost: ``account.history``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.account.history import find_submitted
from segmind_provider.batch.ledger import (
    FAILED,
    PENDING,
    RUNNING,
    STORE_MARKER,
    Ledger,
    store_key,
)
from segmind_provider.batch.submits import read_submits
from segmind_provider.exceptions import SegmindNotFoundError
from segmind_provider.hooks.errors import failure_reason, is_content_block
from segmind_provider.status import RequestStatus, read_status

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = ["UNCERTAIN", "reattach"]

UNCERTAIN = (
    "an earlier submit of this item may have created a billed job whose answer was lost, and the "
    "request history could not settle it; it is not submitted again automatically: look for it in the "
    "account's request history (SegmindHook.request_history) and delete its task_state_store key "
    "{key!r} to submit it anew"
)


def _earlier_requests(ledger: Ledger, store: Any, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """Item key -> what an earlier try remembered of its request: the store's record (written with each
    group of submits, ``batch.submits``), else a manifest entry still RUNNING or completed but not stored (a full disk), written at
    each wave and surviving a new run too: while Segmind holds its result, it is fetched, not paid again."""
    records: dict[str, Any] = {}
    if manifest is not None:
        for key, entry in manifest["items"].items():
            if isinstance(entry, dict) and entry.get("request_id") and _still_held(entry):
                records[str(key)] = entry
    marker = store.get(STORE_MARKER) if store is not None else None
    if isinstance(marker, dict):
        pending = {item.key for item in ledger.with_status(PENDING)}
        for key, record in read_submits(store, int(marker.get("rounds") or 0)).items():
            if key not in pending:
                continue
            if record.get("uncertain") and not isinstance(store.get(store_key(key)), dict):
                continue  # its own key deleted: the user asked for it to be looked up and submitted anew
            records[key] = record
    return records


def _still_held(entry: Mapping[str, Any]) -> bool:
    """A manifest entry whose request may still be fetched: running, or completed and never stored."""
    return entry.get("status") == RUNNING or (entry.get("status") == FAILED and entry.get("unstored") is True)


def _lost_submits(
    ledger: Ledger,
    records: dict[str, Any],
    store: Any,
    hook: SegmindHook,
    payloads: Mapping[str, Mapping[str, Any]],
    model: str,
    pages: int,
    log: logging.Logger | Any,
) -> None:
    """Settle, from the request history, the submits a killed try sent without recording them: the
    pending items of its last round, and those whose answers were lost. Found: re-attached; surely not
    there (the whole window read): submitted; unsure: left failed, said so."""
    marker = store.get(STORE_MARKER) if store is not None else None
    if not isinstance(marker, dict):
        return
    wanted = {
        item.key: payloads[item.key]
        for item in ledger.with_status(PENDING)
        if item.key not in records or records[item.key].get("uncertain")
    }
    if not wanted:
        return
    lost = [float(records[k].get("at") or 0.0) for k in wanted if k in records]
    since = min([float(marker.get("at") or time.time()), *lost])
    known = {str(r.get("request_id")) for r in records.values() if r.get("request_id")}
    known |= {str(item.request_id) for item in ledger.items.values() if item.request_id}
    found, complete = find_submitted(hook, model, wanted, known, since, pages)
    for key, request_id in found.items():
        records[key] = {
            "request_id": request_id,
            "fingerprint": ledger.items[key].fingerprint,
            "submitted_at": since,
        }
    for key in wanted:
        if key not in found and complete and key in records:
            del records[key]  # the history holds no such request: it was never created
    if found:
        log.info("Found %d requests in the request history that a killed try had not recorded", len(found))


def reattach(
    ledger: Ledger,
    store: Any,
    manifest: Mapping[str, Any] | None,
    hook: SegmindHook,
    log: logging.Logger | Any,
    *,
    payloads: Mapping[str, Mapping[str, Any]],
    model: str,
    pages: int,
) -> None:
    """Every request an earlier try (or a run killed mid-batch) submitted and paid for is watched again,
    not submitted again; one gone (results are kept an hour) or FAILED is submitted anew, except a
    content block (the same input is blocked again). ``pages``: history pages a round can fill."""
    records = _earlier_requests(ledger, store, manifest)
    _lost_submits(ledger, records, store, hook, payloads, model, pages, log)
    attached = 0
    for item in ledger.with_status(PENDING):
        record = records.get(item.key)
        if not isinstance(record, dict) or record.get("fingerprint") != item.fingerprint:
            continue
        if record.get("uncertain"):
            item.end(FAILED, error=UNCERTAIN.format(key=store_key(item.key)))
            item.uncertain = True
            continue
        request_id = str(record.get("request_id") or "")
        try:
            answer = hook.get_status(request_id)
        except SegmindNotFoundError:
            log.info(
                "Item %s: request %s is gone (results are kept an hour); submitting it anew",
                item.key,
                request_id,
            )
            continue
        if read_status(answer) is RequestStatus.FAILED:
            reason = failure_reason(answer)
            if is_content_block(reason):
                item.request_id = request_id
                item.end(FAILED, error=reason)
            continue
        # Only COMPLETED and FAILED end a request: any other status, an unknown one too, is live.
        item.request_id, item.status = request_id, RUNNING
        item.submitted_at = float(record.get("submitted_at") or time.time())
        attached += 1
    if records:
        log.info("Re-attached to %d requests an earlier try submitted (not paid again)", attached)
