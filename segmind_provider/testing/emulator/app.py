"""The HTTP side: the Segmind API (with its storage and account paths) on one port, the media
"CDN" on another, admin under `/_emulator`: the wiring of the state, the handler modules and the gate.

Two aiohttp applications share one event loop. The API builds every URL it returns from the
request's own Host header, so a client that reached it as `localhost` is sent back to
`localhost`. Every call passes one gate (`gate.py`): log, faults, key, rate limit, then the handler.
Each handler module gets a `Context` (`context.py`) and the gate in its `add_routes`, never the server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from . import account, admin, api, storage, workflows
from .clock import Clock
from .config import EmulatorConfig
from .context import Addresses, Context, Outputs
from .control import ACCOUNT_PREFIX, STORAGE_PREFIX
from .faults import FaultRule
from .gate import Gate
from .models import ModelSpec
from .responses import not_found
from .state import EmulatorState


class EmulatorServer:
    """Owns the state and both applications; `start()` binds, `stop()` releases everything."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        api_keys: Iterable[str] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule] = (),
        clock: Clock | None = None,
    ) -> None:
        config = config or EmulatorConfig()
        self.state = EmulatorState(config, api_keys=api_keys, models=models, faults=faults, clock=clock)
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
        self.gate = Gate(state.faults, state.keys, state.rate_limit, state.calls)
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


def _bind(host: str, port: int, reuse_address: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
