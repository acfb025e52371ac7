"""PixelFlow workflows on the API host: where a run is submitted and polled, and what a poll answer means.

A workflow published as an API is run with ``POST {base}/workflows/{workflow_id}`` (its inputs as the
JSON body); the answer carries ``request_id`` and ``poll_url``, and ``GET poll_url`` answers
``status`` (QUEUED, PROCESSING, COMPLETED, FAILED) with ``output`` (a JSON *string* once
COMPLETED) or ``error``. Segmind's SDK 1.3 (``segmind.pixelflows``) and the workflow pages' own
examples are the source (docs/workflows.md). The key is sent only to the connection's API host: a
``poll_url`` elsewhere is not followed, the SDK's own fallback path on the API host is polled instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.hooks.connection import path_segment
from segmind_provider.status import RequestStatus, read_status

__all__ = ["check_inputs", "fallback_poll_path", "parse_poll_answer", "poll_path", "submit_path"]

log = logging.getLogger(__name__)


def submit_path(workflow_id: str) -> str:
    """``/workflows/{id}``: the id is one escaped path segment (``672b3a0f8422a5baceb96168-v1``)."""
    return f"/workflows/{path_segment(workflow_id, 'workflow_id')}"


def fallback_poll_path(request_id: str) -> str:
    """Where the SDK polls when an answer gives a request id but no ``poll_url``."""
    return f"/workflows/request/{path_segment(request_id, 'request_id')}"


def poll_path(base_url: str, poll_url: str | None, request_id: str) -> str:
    """The path (under ``base_url``) to poll: ``poll_url``'s when it is on the API host, else the fallback."""
    if poll_url and poll_url.startswith("/") and not poll_url.startswith("//"):
        return poll_url
    if poll_url:
        base = urlsplit(base_url)
        url = urlsplit(poll_url)
        prefix = base.path.rstrip("/")
        same_origin = (url.scheme, url.netloc) == (base.scheme, base.netloc)
        if same_origin and url.path.startswith(prefix + "/"):
            return url.path[len(prefix) :] + (f"?{url.query}" if url.query else "")
        log.warning(
            "Workflow run %s: poll_url %s is not on the API host %s; polling %s there instead "
            "(the API key is never sent to another host)",
            request_id,
            f"{url.scheme}://{url.netloc}",
            base_url,
            fallback_poll_path(request_id),
        )
    return fallback_poll_path(request_id)


def check_inputs(inputs: Any) -> dict[str, Any]:
    """The inputs as a JSON object with string keys, or a SegmindValidationError naming the problem."""
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise SegmindValidationError(
            f"inputs must be a dict of the workflow's input names to values, got {type(inputs).__name__}"
        )
    bad = [repr(k) for k in inputs if not isinstance(k, str) or not k.strip()]
    if bad:
        raise SegmindValidationError(f"inputs: names must be non-empty strings, got {', '.join(bad)}")
    try:
        json.dumps(dict(inputs), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SegmindValidationError(f"inputs must be plain JSON values: {exc}") from None
    return dict(inputs)


def parse_poll_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The poll answer with a documented ``status`` spelled as :class:`RequestStatus` says it and a COMPLETED ``output`` string decoded as JSON.

    The workflow pages' examples ``json.loads`` the output; the SDK keeps a string that is not JSON as
    it is, and so do we.
    """
    parsed = dict(answer)
    status = read_status(answer)
    parsed["status"] = (
        status.value if status is not RequestStatus.UNKNOWN else str(answer.get("status") or "")
    )
    output = parsed.get("output")
    if status is RequestStatus.COMPLETED and isinstance(output, str):
        with contextlib.suppress(ValueError):
            parsed["output"] = json.loads(output)
    return parsed
