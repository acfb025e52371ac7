"""A request's status, read in one place: only COMPLETED and FAILED end a request.

Segmind documents QUEUED, PROCESSING, COMPLETED and FAILED, but a live job may be reported with a
status nobody listed (``IN_PROGRESS``, ``WARMING_UP``). Such a job is still running and may still be
paid for, so every caller that decides between "wait on it" and "submit again" must treat it as
live; a 404 (``SegmindNotFoundError``) is how a request that expired or never existed shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

__all__ = ["RequestStatus", "read_status"]


class RequestStatus(str, Enum):
    """What a status answer says about a request; ``UNKNOWN`` is a live status the provider does not know."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """True only for COMPLETED and FAILED: anything else is still running (and re-attached to)."""
        return self in (RequestStatus.COMPLETED, RequestStatus.FAILED)

    def __str__(self) -> str:
        return self.value


def read_status(answer: Mapping[str, Any], field: str = "status") -> RequestStatus:
    """The status an API answer (or a history row, ``field="model_status"``) carries, case aside.

    A status that is missing or not one of the four documented ones is :attr:`RequestStatus.UNKNOWN`:
    live, never a reason to pay again.
    """
    text = str(answer.get(field) or "").strip().upper()
    try:
        return RequestStatus(text)
    except ValueError:
        return RequestStatus.UNKNOWN
