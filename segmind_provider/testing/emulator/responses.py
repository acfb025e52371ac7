"""JSON answers and bodies, the same way on every endpoint."""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(slots=True)
class Call:
    """The call being served (set by the gate for its handler): what is logged once it is done."""

    endpoint: str
    key_present: bool
    detail: dict[str, Any] | None = None
    logged: bool = False


_CALL: ContextVar[Call | None] = ContextVar("segmind_emulator_call", default=None)


def begin_call(endpoint: str, key_present: bool) -> Call:
    call = Call(endpoint, key_present)
    _CALL.set(call)
    return call


def log_detail(**detail: Any) -> None:
    """Add fields to this call's log entry (an upload's files, a submit's request id)."""
    call = _CALL.get()
    if call is not None:
        call.detail = {**(call.detail or {}), **detail}


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json", headers=headers)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Errors are `{"error": "..."}`, the detail starting with the field or option it is about."""
    return json_response({"error": message}, status, headers)


async def read_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The JSON object body, or a 400 saying what is wrong with it."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return error(400, "Request body must be a JSON object")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object")
    return body


async def not_found(request: web.Request) -> web.StreamResponse:
    return error(404, "Not found")
