"""The gate every API and media call passes: log, faults, key, rate limit, then the handler; and
the faults it applies to a real answer (corrupt, flip, truncate, drip) or instead of one.
"""

from __future__ import annotations

import asyncio
import math
import random

from aiohttp import web
from aiohttp.payload import Payload

from .context import Handler
from .faults import FLIP_BYTES, FaultBook, FaultRule, Fired
from .responses import Call, begin_call, error
from .state import CallLog, Keys, RateLimiter

# Leading bytes a `flip` never touches: a PNG's signature and IHDR chunk (8 + 25).
SNIFF_SAFE = 33

# A status no real answer uses: marks a call whose connection was dropped unanswered.
DROPPED = 599

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (a client may read 0 as "now")."""
    return str(max(1, math.ceil(seconds)))


class Gate:
    """Wraps each handler (`gate(endpoint, handler, auth=...)`); holds only the pieces it checks."""

    def __init__(self, faults: FaultBook, keys: Keys, rate_limit: RateLimiter, calls: CallLog) -> None:
        self._faults = faults
        self._keys = keys
        self._rate_limit = rate_limit
        self._calls = calls

    def __call__(self, endpoint: str, handler: Handler, *, auth: bool = True) -> Handler:
        """Log, inject faults, then check key and rate limit (auth endpoints), then run the handler."""
        faults, calls = self._faults, self._calls

        async def gate(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("x-api-key")
            call = begin_call(endpoint, bool(key))
            status = 0
            try:
                fired = faults.roll(endpoint)
                response = await self._gated(request, handler, fired, call, auth)
                status = 0 if response.status == DROPPED else response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if not call.logged:
                    calls.record(request.method, request.path, endpoint, status, bool(key), call.detail)

        return gate

    async def _gated(
        self, request: web.Request, handler: Handler, fired: Fired | None, call: Call, auth: bool
    ) -> web.StreamResponse:
        key = request.headers.get("x-api-key")
        if fired is not None:
            if fired.delay_before:
                await asyncio.sleep(fired.delay_before)
            if fired.before is not None:
                return await self._apply(request, fired.before, call)
        if auth:
            if not key:
                return error(401, "Unauthorized: missing x-api-key header")
            if not self._keys.accepted(key):
                return error(401, "Unauthorized: invalid API key")
            wait = self._rate_limit.wait(key)
            if wait is not None:
                return error(
                    429, "Rate limit exceeded, retry later", {"Retry-After": retry_after_header(wait)}
                )
        response = await handler(request)
        if fired is not None:
            if fired.delay_after:
                await asyncio.sleep(fired.delay_after)
            if fired.after is not None:
                return await self._apply(request, fired.after, call)
            if fired.body is not None and isinstance(response, web.Response):
                return await mangle(request, response, fired.body)
        return response

    async def _apply(self, request: web.Request, rule: FaultRule, call: Call) -> web.Response:
        if rule.kind == "hang":
            # Logged now, not when the connection finally closes: the client gave up long before.
            self._calls.record(request.method, request.path, call.endpoint, 0, call.key_present, call.detail)
            call.logged = True
            await asyncio.sleep(rule.hold)
        if rule.kind in ("drop", "hang"):
            if request.transport is not None:
                request.transport.abort()
            # aiohttp discards a response whose transport is gone; nothing reaches the client.
            return web.Response(status=DROPPED)
        if rule.body is not None:
            return web.Response(text=rule.body, status=rule.status, content_type="text/plain")
        return error(rule.status, f"Injected fault: {rule.status} {_REASONS.get(rule.status, 'Error')}")


async def mangle(request: web.Request, response: web.Response, rule: FaultRule) -> web.StreamResponse:
    """A `corrupt`, `flip`, `truncate` or `drip` fault applied to a real answer (full Content-Length each)."""
    body = await _body_bytes(response)
    if rule.kind == "corrupt":
        return web.Response(body=corrupt(body), status=response.status, headers=response.headers)
    if rule.kind == "flip":
        return web.Response(body=flip(body), status=response.status, headers=response.headers)
    if rule.kind == "drip":
        return await drip(request, response, body, rule.rate)
    head = f"HTTP/1.1 {response.status} {response.reason}\r\n"
    headers = {**response.headers, "Content-Length": str(len(body)), "Connection": "close"}
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    if request.transport is not None:
        request.transport.write(head.encode("latin-1") + body[: len(body) // 2])
        request.transport.close()
    return web.Response(status=DROPPED)


def corrupt(body: bytes) -> bytes:
    """Same length, same leading bytes, garbage after. A PNG keeps its signature and every chunk up
    to the image data (so it opens and shows its size), then its pixels are noise that does not
    decode; other formats keep their first 16 bytes (their magic)."""
    idat = body.find(b"IDAT") if body.startswith(b"\x89PNG\r\n\x1a\n") else -1
    keep = idat + 6 if idat > 0 else 16  # the chunk type and the zlib header stay
    return body[:keep] + random.Random(len(body)).randbytes(max(0, len(body) - keep))


async def _body_bytes(response: web.Response) -> bytes:
    """A response's body: bytes as given, or a payload's (a JSON answer is a string payload)."""
    if isinstance(response.body, bytes):
        return response.body
    if isinstance(response.body, Payload):
        return await response.body.as_bytes()
    return b""


def flip(body: bytes) -> bytes:
    """Same length, same signature and header: FLIP_BYTES bytes in the middle inverted (what a bad
    disk or a broken proxy can leave; a PNG's CRCs catch it, a lenient decoder may not)."""
    start = max(len(body) // 2 - FLIP_BYTES // 2, min(len(body), SNIFF_SAFE))
    end = min(len(body), start + FLIP_BYTES)
    return body[:start] + bytes(b ^ 0xFF for b in body[start:end]) + body[end:]


async def drip(request: web.Request, response: web.Response, body: bytes, rate: float) -> web.StreamResponse:
    """The real headers at once, then the body at ``rate`` bytes per second: each read gets bytes in
    time, so only a deadline on the whole call ends it."""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    out = web.StreamResponse(status=response.status, headers=headers)
    out.content_length = len(body)
    await out.prepare(request)
    step = max(1, int(rate // 10))
    try:
        for start in range(0, len(body), step):
            await out.write(body[start : start + step])
            await asyncio.sleep(step / rate)
    except (ConnectionError, RuntimeError):  # the client gave up: what the fault is for
        return web.Response(status=DROPPED)
    await out.write_eof()
    return out
