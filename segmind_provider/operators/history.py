"""The account's request history, read for a batch: what requests cost, and submits whose answer was lost.

``GET {account_url}/inference-request/request-history`` lists the key's requests newest first, in-flight
ones included, in pages of up to 100 rows. One call accounts for a hundred requests, so a batch reads
it once per hundred results (never once per request: on a 50-per-minute key every call is an image not
made), and a retry reads the few pages since its last round of submits to find the requests a killed
try paid for but never recorded (matched by model and ``request_body``; a request found is re-attached,
one not there was never created and is submitted).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.operators.durable import (
    CLOCK_SKEW_SECONDS,
    fingerprint,
    parse_request_body,
    row_created,
    same_request,
)

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = ["costs_from_history", "find_submitted"]

#: History pages read beyond what the wanted requests would fill: other work on the key interleaves.
EXTRA_HISTORY_PAGES = 3
#: The history answers windows of at most 31 days.
MAX_HISTORY_DAYS = 30


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).date().isoformat()


def _pages(hook: SegmindHook, model: str, since: float, pages: int) -> Iterator[list[dict[str, Any]]]:
    """Pages of the model's rows, newest first, until one reaches past ``since`` or runs short.

    The last page yielded is empty when the window was covered in full (nothing older is missing).
    """
    first_day = _day(max(since - 86400.0, time.time() - MAX_HISTORY_DAYS * 86400.0))
    last_day = _day(time.time() + 86400.0)  # Segmind's day may already be tomorrow
    for page in range(1, pages + 1):
        rows = hook.request_history(
            model=model, from_date=first_day, to_date=last_day, page=page, per_page=HISTORY_PAGE_SIZE
        )
        yield rows
        created = [c for c in map(row_created, rows) if c is not None]
        if len(rows) < HISTORY_PAGE_SIZE or (created and min(created) < since - CLOCK_SKEW_SECONDS):
            yield []
            return


def costs_from_history(
    hook: SegmindHook, model: str, request_ids: Collection[str], since: float
) -> dict[str, float]:
    """What each of ``request_ids`` cost (``credits_deduction``, USD).

    Reads until every id is found, a row older than ``since`` (the first submit) appears, or the
    pages the ids could fill (plus a few for other work on the key) are read. A request listed once
    per output counts once. Ids not found are left out: their cost stays unknown, never guessed.
    """
    wanted = set(request_ids)
    found: dict[str, float] = {}
    if not wanted:
        return found
    for rows in _pages(hook, model, since, -(-len(wanted) // HISTORY_PAGE_SIZE) + EXTRA_HISTORY_PAGES):
        for row in rows:
            request_id = str(row.get("request_id") or "")
            cost = row.get("credits_deduction")
            if request_id in wanted and request_id not in found and isinstance(cost, (int, float)):
                found[request_id] = float(cost)
        if len(found) == len(wanted):
            break
    return found


def _payload_key(payload: Mapping[str, Any]) -> str:
    """What a payload and a history row's body must share to be compared at all (its prompt)."""
    return json.dumps(payload.get("prompt"), sort_keys=True, default=str)


def find_submitted(
    hook: SegmindHook,
    model: str,
    wanted: Mapping[str, Mapping[str, Any]],
    known: Collection[str],
    since: float,
    pages: int,
) -> tuple[dict[str, str], bool]:
    """Requests created since ``since`` for the items of ``wanted`` (item key -> payload as sent),
    excluding ``known`` request ids: (item key -> request id, whether the whole window was read, so
    an item not found surely has no request).

    A row matches an item the way ``operators.durable.same_request`` says (the model, and every
    parameter sent, unchanged; the server may add defaults); two items with the same payload take
    two different requests, oldest first.
    """
    exact: dict[str, list[str]] = {}
    by_prompt: dict[str, list[str]] = {}
    for key, payload in wanted.items():
        exact.setdefault(fingerprint(model, payload), []).append(key)
        by_prompt.setdefault(_payload_key(payload), []).append(key)
    rows: list[dict[str, Any]] = []
    complete = False
    for page in _pages(hook, model, since, pages):
        rows.extend(page)
        complete = not page
    found: dict[str, str] = {}
    seen = set(known)
    for row in reversed(rows):  # oldest first, so equal payloads pair up in submit order
        request_id = str(row.get("request_id") or "")
        created = row_created(row)
        body = parse_request_body(row.get("request_body"))
        if not request_id or request_id in seen or body is None:
            continue
        if created is not None and created < since - CLOCK_SKEW_SECONDS:
            continue
        keys = [k for k in exact.get(fingerprint(model, body), []) if k not in found]
        if not keys:  # not byte for byte: the same request with defaults filled in?
            candidates = by_prompt.get(_payload_key(body), [])
            keys = [k for k in candidates if k not in found and same_request(row, model, wanted[k])]
        if keys:
            found[keys[0]] = request_id
            seen.add(request_id)
    return found, complete
