"""The HTTP side: the Segmind API (with its storage and account paths) on one port, the media
"CDN" on another, admin under `/_emulator`.

Two aiohttp applications share one event loop. The API builds every URL it returns from the
request's own Host header, so a client that reached it as `localhost` is sent back to
`localhost`. Every call passes one gate: log, faults, key, rate limit, then the handler.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.payload import Payload

from . import account, admin, api, storage, workflows
from .config import EmulatorConfig
from .context import Addresses, Context, Handler, Outputs
from .control import ACCOUNT_PREFIX, STORAGE_PREFIX
from .faults import FLIP_BYTES, FaultRule, Fired
from .models import ModelSpec
from .responses import Call, begin_call, error, not_found
from .state import EmulatorState, retry_after_header

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


class EmulatorServer:
    """Owns the state and both applications; `start()` binds, `stop()` releases everything."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        api_keys: Iterable[str] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule] = (),
    ) -> None:
        config = config or EmulatorConfig()
        self.state = EmulatorState(config, api_keys=api_keys, models=models, faults=faults)
        self.outputs = Outputs(int(config.render_cache_mb * 1024 * 1024))
        self.urls = Addresses(self.state.config)
        state = self.state
        self.context = Context(
            config=state.config,
            clock=state.clock,
            models=state.models,
            keys=state.keys,
            credits=state.credits,
            jobs=state.jobs,
            assets=state.assets,
            addresses=self.urls,
            outputs=self.outputs,
        )
        self._runners: list[web.AppRunner] = []

    # -- wiring ----------------------------------------------------------------------
    def build_api_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        ctx, gate = self.context, self.gate
        api.add_routes(app, ctx, gate)
        storage.add_routes(app, ctx, gate, STORAGE_PREFIX)
        account.add_routes(app, ctx, gate, ACCOUNT_PREFIX)
        admin.add_routes(app, admin.Control(self.state, self.outputs, self.urls), "/_emulator")
        workflows.add_routes(app, ctx, gate, "/_emulator")
        app.router.add_route("*", "/{tail:.*}", not_found)
        return app

    def build_media_app(self) -> web.Application:
        app = web.Application()
        storage.add_media_routes(app, self.context, self.gate)
        api.add_media_routes(app, self.context, self.gate)
        app.router.add_route("*", "/{tail:.*}", not_found)
        return app

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        media_port: int = 0,
        *,
        reuse_address: bool = True,
    ) -> None:
        """Bind both ports (0 = any free port) and start serving."""
        self.urls.host = host
        # A short shutdown timeout: stopping must not wait for a handler sleeping in a delay fault.
        opts: dict[str, Any] = {"access_log": None, "handle_signals": False, "shutdown_timeout": 0.5}
        socks = []
        for app, wanted in ((self.build_api_app(), port), (self.build_media_app(), media_port)):
            runner = web.AppRunner(app, **opts)
            await runner.setup()
            self._runners.append(runner)
            sock = _bind(host, wanted, reuse_address)
            socks.append(sock)
            await web.SockSite(runner, sock).start()
        self.urls.port = socks[0].getsockname()[1]
        self.urls.media_port = socks[1].getsockname()[1]

    async def stop(self) -> None:
        await asyncio.gather(*(r.cleanup() for r in self._runners))
        self._runners = []
        self.outputs.close()

    @property
    def port(self) -> int:
        return self.urls.port

    @property
    def media_port(self) -> int:
        return self.urls.media_port

    @property
    def base_url(self) -> str:
        return self.urls.base_url

    @property
    def media_url(self) -> str:
        return self.urls.media_url

    def addresses(self) -> dict[str, str]:
        """API, media, storage and account base URLs (the last two are path prefixes on the API port)."""
        return self.urls.as_dict()

    # -- the gate every call passes --------------------------------------------------
    def gate(self, endpoint: str, handler: Handler, *, auth: bool = True) -> Handler:
        """Log, inject faults, then check key and rate limit (auth endpoints), then run the handler."""
        state = self.state

        async def gate(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("x-api-key")
            call = begin_call(endpoint, bool(key))
            status = 0
            try:
                fired = state.faults.roll(endpoint)
                response = await self._gated(request, handler, fired, call, auth)
                status = 0 if response.status == DROPPED else response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if not call.logged:
                    state.calls.record(request.method, request.path, endpoint, status, bool(key), call.detail)

        return gate

    async def _gated(
        self, request: web.Request, handler: Handler, fired: Fired | None, call: Call, auth: bool
    ) -> web.StreamResponse:
        state = self.state
        key = request.headers.get("x-api-key")
        if fired is not None:
            if fired.delay_before:
                await asyncio.sleep(fired.delay_before)
            if fired.before is not None:
                return await self._apply(request, fired.before, call)
        if auth:
            if not key:
                return error(401, "Unauthorized: missing x-api-key header")
            if not state.keys.accepted(key):
                return error(401, "Unauthorized: invalid API key")
            wait = state.rate_limit.wait(state.keys.hash(key))
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
            self.state.calls.record(
                request.method, request.path, call.endpoint, 0, call.key_present, call.detail
            )
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


def _bind(host: str, port: int, reuse_address: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
