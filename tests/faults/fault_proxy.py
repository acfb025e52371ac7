"""A recording, rewriting HTTP proxy in front of the emulator, for what its fault knobs cannot do.

The emulator injects errors, delays, drops, hangs, corrupt and cut bodies; it does not answer
well-formed JSON with a field missing or a status it does not know, and its call log does not keep
the ``Retry-After`` it sent. This proxy forwards every request unchanged, keeps a log of what it saw
(arrival time, path, status, ``Retry-After``), and rewrites the JSON of chosen answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Seen:
    """One request through the proxy: when it arrived, what it was, how it was answered."""

    arrived: float
    answered: float
    method: str
    path: str
    status: int
    retry_after: str | None


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    change: Rewrite
    left: int


class RewritingProxy:
    """``with RewritingProxy(upstream) as proxy: proxy.base_url``; ``proxy.rewrite(...)`` changes answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.base_url = ""
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    def rewrite(self, method: str, path_regex: str, change: Rewrite, count: int = 1) -> None:
        """The next ``count`` JSON answers to ``method`` on a path matching ``path_regex`` pass ``change``."""
        with self._lock:
            self._rules.append(_Rule(method, re.compile(path_regex), change, count))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.seen.clear()

    def _take(self, method: str, path: str) -> Rewrite | None:
        with self._lock:
            for rule in self._rules:
                if rule.left > 0 and rule.method == method and rule.pattern.search(path):
                    rule.left -= 1
                    return rule.change
        return None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            answer = json.loads(payload) if 200 <= status < 300 else None
        except ValueError:  # not JSON (an emulator fault already garbled it): passed on as it is
            answer = None
        change = self._take(request.method, request.path) if isinstance(answer, dict) else None
        if change is not None:
            payload = json.dumps(change(answer)).encode()
        with self._lock:
            self.seen.append(
                Seen(
                    arrived,
                    time.time(),
                    request.method,
                    request.path,
                    status,
                    answer_headers.get("Retry-After"),
                )
            )
        return web.Response(body=payload, status=status, headers=answer_headers)

    def __enter__(self) -> RewritingProxy:
        ready = threading.Event()

        async def serve() -> None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.base_url = f"http://127.0.0.1:{port}"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="rewriting-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
