"""The account's request history, read for a batch: what requests cost, and submits whose answer was lost.

``GET {account_url}/inference-request/request-history`` lists the key's requests newest first, in-flight
ones included, in pages of up to 100 rows. One call accounts for a hundred requests, so a batch reads
it once per hundred results (never once per request: on a 50-per-minute key every call is an image not
made), and a retry reads the few pages since its last round of submits to find the requests a killed
try paid for but never recorded (matched by model and ``request_body``; a request found is re-attached,
one not there was never created and is submitted).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import time
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.operators.durable import fingerprint

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = ["costs_from_history", "find_submitted", "request_body"]

#: History pages read beyond what the wanted requests would fill: other work on the key interleaves.
EXTRA_HISTORY_PAGES = 3
#: The history answers windows of at most 31 days.
MAX_HISTORY_DAYS = 30
#: Clocks differ between us and Segmind: rows this much older than ``since`` still count.
CLOCK_SLACK = 60.0


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).date().isoformat()


def _created(row: Mapping[str, Any]) -> float | None:
    text = row.get("created_at")
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pages(hook: SegmindHook, model: str, since: float, pages: int) -> Iterator[list[dict[str, Any]]]:
    """Pages of the model's rows, newest first, until one reaches past ``since`` or runs short.

    The last page yielded is empty when the window was covered in full (nothing older is missing).
    """
    first_day = _day(max(since - 86400.0, time.time() - MAX_HISTORY_DAYS * 86400.0))
    for page in range(1, pages + 1):
        rows = hook.request_history(model=model, from_date=first_day, page=page, per_page=HISTORY_PAGE_SIZE)
        yield rows
        created = [c for c in map(_created, rows) if c is not None]
        if len(rows) < HISTORY_PAGE_SIZE or (created and min(created) < since - CLOCK_SLACK):
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


def request_body(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A history row's inputs: a dict, JSON text, or a Python literal (as the official SDK's tests show)."""
    body = row.get("request_body")
    if isinstance(body, dict):
        return body
    if not isinstance(body, str):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def find_submitted(
    hook: SegmindHook,
    model: str,
    wanted: Mapping[str, str],
    known: Collection[str],
    since: float,
    pages: int,
) -> tuple[dict[str, str], bool]:
    """Requests created since ``since`` for the items of ``wanted`` (item key -> fingerprint of the
    payload as sent), excluding ``known`` request ids: (item key -> request id, whether the whole
    window was read, so an item not found surely has no request).

    Two items with the same payload take two different requests, oldest first by key order.
    """
    waiting: dict[str, list[str]] = {}
    for key, digest in wanted.items():
        waiting.setdefault(digest, []).append(key)
    rows: list[dict[str, Any]] = []
    complete = False
    for page in _pages(hook, model, since, pages):
        rows.extend(page)
        complete = not page
    found: dict[str, str] = {}
    seen = set(known)
    for row in reversed(rows):  # oldest first, so equal payloads pair up in submit order
        request_id = str(row.get("request_id") or "")
        created = _created(row)
        body = request_body(row)
        if (
            not request_id
            or request_id in seen
            or body is None
            or (created and created < since - CLOCK_SLACK)
        ):
            continue
        keys = waiting.get(fingerprint(model, body))
        if keys:
            found[keys.pop(0)] = request_id
            seen.add(request_id)
    return found, complete
