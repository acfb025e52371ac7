"""JSON answers and bodies, the same way on every endpoint."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .app import EmulatorServer

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


def server_of(request: web.Request) -> EmulatorServer:
    return request.config_dict["server"]  # type: ignore[no-any-return]


async def not_found(request: web.Request) -> web.StreamResponse:
    return error(404, "Not found")
