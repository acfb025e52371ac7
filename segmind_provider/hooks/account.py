"""Segmind's other two hosts: storage (input uploads) and account (request history, model list).

The hook's ``upload``, ``request_history`` and ``get_request`` call these with itself, so they share
its connection, budget, retry policy and error mapping. The key goes to ``storage_url`` and
``account_url`` (connection extras) and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.exceptions import SegmindServerError, SegmindValidationError
from segmind_provider.hooks.budget import Priority
from segmind_provider.hooks.connection import path_segment
from segmind_provider.media import data_url

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = [
    "HISTORY_PAGE_SIZE",
    "PAGING_FIELDS",
    "get_request",
    "history_page",
    "list_models",
    "request_history",
    "upload",
]

HISTORY_PAGE_SIZE = 100
"""The most rows one history call asks for: one call can account for a hundred requests."""
PAGING_FIELDS = ("page", "per_page", "total", "total_pages")
"""Where a history answer says how it is paged."""


def upload(hook: SegmindHook, data: bytes, content_type: str) -> str:
    """``POST {storage_url}/upload-asset``: store an input file, return its persistent URL.

    Sent as the official SDK does (``{"data_urls": ["data:<type>;base64,..."]}``). A retry of a
    lost answer uploads the same bytes again, which costs nothing but a second stored copy.
    """
    if not data:
        raise SegmindValidationError("refusing to upload an empty file")
    settings = hook.get_settings()
    body = {"data_urls": [data_url(data, content_type)]}

    def attempt() -> str:
        response = hook._send("POST", "/upload-asset", priority=Priority.SUBMIT, host="storage", payload=body)
        answer = hook._json(response.content, "POST /upload-asset", settings)
        urls = answer.get("file_urls") if isinstance(answer, dict) else None
        if not (isinstance(urls, list) and urls and isinstance(urls[0], str)):
            raise SegmindServerError(f"POST /upload-asset: answer carries no file_urls: {str(answer)[:200]}")
        return urls[0]

    return hook._call(attempt, idempotent=True, settings=settings)


def request_history(hook: SegmindHook, **filters: Any) -> list[dict[str, Any]]:
    """One page of the key's requests, newest first (in-flight ones included), as history rows.

    Filters as :func:`history_page`. Rows carry ``request_id``, ``model_name``, ``model_status``,
    ``request_body``, ``credits_deduction`` and timestamps; a request with several outputs may appear
    once per output (de-duplicate on ``request_id``). To read more than a page, use
    ``account.history.HistoryWindow``, which follows the answer's paging fields.
    """
    rows, _ = history_page(hook, **filters)
    return rows


def history_page(
    hook: SegmindHook,
    *,
    model: str | None = None,
    status: str | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
    page: int = 1,
    per_page: int = HISTORY_PAGE_SIZE,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page's rows and its paging fields (``page``, ``per_page``, ``total``, ``total_pages``, as
    answered: a server may serve fewer rows per page than asked). Dates are ``YYYY-MM-DD``."""
    if not 1 <= per_page <= HISTORY_PAGE_SIZE:
        raise SegmindValidationError(f"per_page must be 1..{HISTORY_PAGE_SIZE}, got {per_page}")
    params: dict[str, Any] = {
        "page": page,
        "per_page": per_page,
        "sort_by": "model_created",
        "sort_order": "desc",
    }
    optional = {"model_name": model, "status": status, "from_date": from_date, "to_date": to_date}
    params.update({k: v for k, v in optional.items() if v})
    answer = hook._get(
        "/inference-request/request-history", priority=Priority.RESULT, host="account", params=params
    )
    paging = {key: answer.get(key) for key in PAGING_FIELDS}
    return _rows(answer), paging


def get_request(hook: SegmindHook, request_id: str) -> dict[str, Any]:
    """One of the key's own requests, any age, as a history row."""
    path = f"/inference-request/request-history/{path_segment(request_id, 'request_id')}"
    answer = hook._get(path, priority=Priority.RESULT, host="account", request_id=request_id)
    rows = _rows(answer)
    return rows[0] if rows else answer


def list_models(hook: SegmindHook) -> Any:
    """``GET {account_url}/inference-model-information/list``: Segmind's live model list, as answered.

    The shape is undocumented (a list, or an object holding one): ``catalog.directory`` reads it.
    """
    settings = hook.get_settings()
    path = "/inference-model-information/list"

    def attempt() -> Any:
        response = hook._send("GET", path, priority=Priority.RESULT, host="account")
        return hook._json(response.content, f"GET {path}", settings)

    return hook._call(attempt, idempotent=True, settings=settings)


def _rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """History answers put their rows under ``data`` (a list, or one row)."""
    data = answer.get("data", answer)
    if isinstance(data, list):
        return [row for row in data if isinstance(row, dict)]
    return [data] if isinstance(data, dict) and data.get("request_id") else []
