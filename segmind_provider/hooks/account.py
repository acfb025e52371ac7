"""Segmind's other two hosts, storage (input uploads) and account (request history, model list): their
paths, what is sent and how the answers read.

The hook's ``upload``, ``history_page``, ``request_history``, ``get_request`` and ``list_models``
send these with its own connection, budget, retry policy and error mapping, as ``hooks.workflows``
is for workflow runs. The key goes to ``storage_url`` and ``account_url`` (connection extras) and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segmind_provider.exceptions import SegmindServerError, SegmindValidationError
from segmind_provider.hooks.connection import path_segment
from segmind_provider.media import data_url

__all__ = [
    "HISTORY_PAGE_SIZE",
    "HISTORY_PATH",
    "MODELS_PATH",
    "PAGING_FIELDS",
    "UPLOAD_PATH",
    "history_params",
    "history_rows",
    "paging",
    "request_path",
    "upload_body",
    "uploaded_url",
]

HISTORY_PAGE_SIZE = 100
"""The most rows one history call asks for: one call can account for a hundred requests."""
PAGING_FIELDS = ("page", "per_page", "total", "total_pages")
"""Where a history answer says how it is paged."""
UPLOAD_PATH = "/upload-asset"
HISTORY_PATH = "/inference-request/request-history"
MODELS_PATH = "/inference-model-information/list"
"""Segmind's live model list; the answer's shape is undocumented (``catalog.directory`` reads it)."""


def upload_body(data: bytes, content_type: str) -> dict[str, Any]:
    """An upload as the official SDK sends it (``{"data_urls": ["data:<type>;base64,..."]}``)."""
    if not data:
        raise SegmindValidationError("refusing to upload an empty file")
    return {"data_urls": [data_url(data, content_type)]}


def uploaded_url(answer: Any) -> str:
    """The persistent URL in an upload's answer."""
    urls = answer.get("file_urls") if isinstance(answer, dict) else None
    if not (isinstance(urls, list) and urls and isinstance(urls[0], str)):
        raise SegmindServerError(f"POST {UPLOAD_PATH}: answer carries no file_urls: {str(answer)[:200]}")
    return urls[0]


def history_params(
    *,
    model: str | None = None,
    status: str | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
    page: int = 1,
    per_page: int = HISTORY_PAGE_SIZE,
) -> dict[str, Any]:
    """The query of one history page, newest first. Dates are ``YYYY-MM-DD``."""
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
    return params


def paging(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A history answer's paging fields, as answered: a server may serve fewer rows per page than asked."""
    return {key: answer.get(key) for key in PAGING_FIELDS}


def request_path(request_id: str) -> str:
    """The history path of one of the key's own requests."""
    return f"{HISTORY_PATH}/{path_segment(request_id, 'request_id')}"


def history_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """History answers put their rows under ``data`` (a list, or one row)."""
    data = answer.get("data", answer)
    if isinstance(data, list):
        return [row for row in data if isinstance(row, dict)]
    return [data] if isinstance(data, dict) and data.get("request_id") else []
