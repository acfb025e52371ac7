"""The account's request history, read in one place: the rows of a window, what requests cost, lost submits.

``GET {account_url}/inference-request/request-history`` lists the key's requests newest first, in-flight
ones included, a page at a time. :class:`HistoryWindow` is the only reader: it follows the answer's own
paging fields (a server may serve fewer rows than ``per_page`` asked and say so) until the window is
covered. A batch reads it once per hundred results for costs (never once per request: on a
50-per-minute key every call is an image not made), and a retry reads the window of its earlier
submits to find the requests a killed try paid for but never recorded.

A row matches a payload only when its ``request_body``, after the normalisation of
:func:`parse_request_body` and :func:`same_request`, equals the payload that was sent (docs/reliability.md).
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segmind_provider.hooks.account import HISTORY_PAGE_SIZE

if TYPE_CHECKING:
    from segmind_provider.hooks.api import SegmindApiHook

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "HistoryWindow",
    "costs_from_history",
    "find_submitted",
    "parse_request_body",
    "row_created",
    "same_request",
    "same_sent",
    "sent_digest",
]

#: How far our clock and Segmind's may disagree when a history row's creation time is compared.
CLOCK_SKEW_SECONDS = 30.0
#: History pages read beyond what the wanted requests would fill: other work on the key interleaves.
EXTRA_HISTORY_PAGES = 3
#: The history answers windows of at most 31 days.
MAX_HISTORY_DAYS = 30
_CREATED_KEYS = ("created_at", "createdAt", "model_created", "created", "timestamp")

log = logging.getLogger(__name__)


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
    """True when a history row is ``model`` (case aside) and its inputs equal ``payload``, as JSON carries them.

    Nothing more is allowed: a row with a key the payload lacks is another request (another task may
    have sent the same prompt with more parameters).
    """
    body = _body_of(row, model)
    return body is not None and _plain(body) == _plain(dict(payload))


def sent_digest(payload: Mapping[str, Any]) -> str:
    """A short stand-in for a payload as sent (upload URLs included), kept where the payload is too big to keep."""
    text = json.dumps(_numbers_alike(_plain(dict(payload))), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _numbers_alike(value: Any) -> Any:
    """``1.0`` as ``1``, throughout: the digest then equates what :func:`same_request` equates."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers_alike(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_alike(item) for item in value]
    return value


def same_sent(row: Mapping[str, Any], model: str, digest: str) -> bool:
    """True when a history row is ``model`` and its inputs are the payload whose :func:`sent_digest` is ``digest``.

    How a retry recognises an earlier try's submit: the retry's own payload differs from it wherever
    an input file was uploaded again (a new URL for the same bytes).
    """
    body = _body_of(row, model)
    return body is not None and sent_digest(body) == digest


def _body_of(row: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """A history row's parsed inputs when the row is ``model`` (case aside); None otherwise."""
    if str(row.get("model_name") or "").strip().lower() != model.strip().lower():
        return None
    return parse_request_body(row.get("request_body"))


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


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class HistoryWindow:
    """The model's history rows created between ``since`` and ``until`` (clock skew either side), newest
    first, one per request, read until the window is covered or ``max_rows`` rows were read.

    Iterating yields ``(created, row)``; ``created`` is None for a row whose time cannot be read.
    ``covered`` is True once the whole window was read: a request not seen then surely was not created
    in it. The answer's ``per_page``, ``total`` and ``total_pages`` say whether more pages exist; a page
    shorter than asked ends the reading only when the answer carries no paging fields.
    """

    hook: SegmindApiHook
    model: str
    since: float
    until: float | None = None
    max_rows: int = 5 * HISTORY_PAGE_SIZE
    covered: bool = False
    pages: int = 0

    def __iter__(self) -> Iterator[tuple[float | None, dict[str, Any]]]:
        low = self.since - CLOCK_SKEW_SECONDS
        high = math.inf if self.until is None else self.until + CLOCK_SKEW_SECONDS
        now = time.time()
        first_day = _day(max(low - 86400.0, now - MAX_HISTORY_DAYS * 86400.0))
        last_day = _day(max(now, self.until or now) + 86400.0)  # Segmind's day may already be tomorrow
        seen: set[str] = set()
        read = 0
        self.covered, self.pages = False, 0
        while read < self.max_rows:
            self.pages += 1
            rows, paging = self.hook.history_page(
                model=self.model, from_date=first_day, to_date=last_day, page=self.pages
            )
            read += len(rows)
            past = False
            for row in rows:
                created = row_created(row)
                request_id = str(row.get("request_id") or "")
                if created is not None and created < low:
                    past = True  # newest first: everything after is older still
                    break
                if not request_id or request_id in seen or (created is not None and created > high):
                    continue
                seen.add(request_id)  # one row per output: keep one
                yield created, row
            if past or not rows or not _more(paging, self.pages, len(rows)):
                self.covered = True
                return


def _more(paging: Mapping[str, Any], page: int, rows: int) -> bool:
    """Whether the history holds a page after ``page``, by the answer's own paging fields."""
    per_page, total, total_pages = (_count(paging.get(k)) for k in ("per_page", "total", "total_pages"))
    if total_pages is not None:
        return page < total_pages
    if total is not None and per_page:
        return page * per_page < total
    return rows >= (per_page or HISTORY_PAGE_SIZE)


def costs_from_history(
    hook: SegmindApiHook, model: str, request_ids: Collection[str], since: float, *, newer: int = 0
) -> dict[str, float]:
    """What each of ``request_ids`` cost (``credits_deduction``, USD).

    Reads the window since ``since`` (the first submit), newest first, until every id is found, or the
    rows the ids could fill are read: theirs, the ``newer`` requests the caller made after the oldest
    of them (listed before it), and a few pages for other work on the key. A request listed once per
    output counts once. Ids not found are left out: their cost stays unknown, never guessed.
    """
    wanted = set(request_ids)
    found: dict[str, float] = {}
    if not wanted:
        return found
    pages = -(-(len(wanted) + max(newer, 0)) // HISTORY_PAGE_SIZE) + EXTRA_HISTORY_PAGES
    for _, row in HistoryWindow(hook, model, since, max_rows=pages * HISTORY_PAGE_SIZE):
        request_id = str(row.get("request_id") or "")
        cost = row.get("credits_deduction")
        if request_id in wanted and isinstance(cost, (int, float)):
            found[request_id] = float(cost)
            if len(found) == len(wanted):
                break
    return found


def find_submitted(
    hook: SegmindApiHook,
    model: str,
    wanted: Mapping[str, Mapping[str, Any]],
    known: Collection[str],
    since: float,
    pages: int,
) -> tuple[dict[str, str], bool]:
    """Requests created since ``since`` for the items of ``wanted`` (item key -> payload as sent),
    excluding ``known`` request ids: (item key -> request id, whether the whole window was read and
    settled, so an item not found surely has no request).

    A row matches an item the way :func:`same_request` says (equal inputs). Items with the same
    payload take different requests, oldest first; when more rows match a payload than items sent it,
    the rows cannot be told apart and none is taken (the window then counts as unsettled).
    """
    by_payload: dict[str, list[str]] = {}
    for key, payload in wanted.items():
        by_payload.setdefault(json.dumps(_plain(dict(payload)), sort_keys=True), []).append(key)
    window = HistoryWindow(hook, model, since, max_rows=pages * HISTORY_PAGE_SIZE)
    matches: dict[str, list[tuple[float, str]]] = {}
    for created, row in window:
        request_id = str(row.get("request_id") or "")
        body = parse_request_body(row.get("request_body"))
        if created is None or request_id in known or body is None:
            continue
        text = json.dumps(_plain(body), sort_keys=True)
        if text in by_payload and same_request(row, model, wanted[by_payload[text][0]]):
            matches.setdefault(text, []).append((created, request_id))
    found: dict[str, str] = {}
    settled = window.covered
    for text, rows in matches.items():
        keys = by_payload[text]
        if len(rows) > len(keys):
            log.warning(
                "Items %s: %d requests in the history match their payload, more than were sent; "
                "they cannot be told apart, so none is re-attached (%s)",
                ", ".join(keys),
                len(rows),
                ", ".join(request_id for _, request_id in rows),
            )
            settled = False
            continue
        for key, (_, request_id) in zip(keys, sorted(rows), strict=False):
            found[key] = request_id
    return found, settled
