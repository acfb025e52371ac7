"""The per-event-loop async HTTP client: one pooled aiohttp session per (loop, base URL).

A session must never be used on another loop (``airflow dags test`` runs each trigger in
its own ``asyncio.run``: "Event loop is closed"), so sessions are kept per running loop, in
the process state (``segmind_provider.runtime``), and closed when that loop shuts down.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from segmind_provider import __version__

__all__ = ["USER_AGENT", "LoopClient", "LoopClients", "new_loop_client"]

USER_AGENT = f"airflow-provider-segmind/{__version__}"


class LoopClient(NamedTuple):
    """A loop's pooled session for one base URL, the gate in front of its pool, and its proxy."""

    session: aiohttp.ClientSession
    gate: asyncio.Semaphore
    proxy: Any
    proxy_auth: Any


def _env_proxy(base_url: str) -> tuple[Any, Any]:
    """HTTP(S)_PROXY / NO_PROXY for a base URL, as requests would apply them."""
    try:
        return get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None


def new_loop_client(base_url: str, pool_limit: int) -> LoopClient:
    """A new pooled session (call on the loop that will use it).

    The gate admits as many requests as the pool has sockets. When thousands of polls fall due
    together the rest wait at the gate as one small future each, instead of each building its
    whole request first and queueing inside aiohttp: that pile-up of half-made requests is what
    filled the heap and set off the long garbage-collector passes (docs/benchmarks.md).
    """
    connector = aiohttp.TCPConnector(limit=pool_limit, limit_per_host=pool_limit)
    # trust_env off: with it aiohttp reads ~/.netrc in a thread on EVERY request (a thread hop per
    # poll). Proxies from the environment are still honoured, resolved once per client.
    session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False)
    proxy, proxy_auth = _env_proxy(base_url)
    return LoopClient(session, asyncio.Semaphore(pool_limit), proxy, proxy_auth)


class LoopClients:
    """One loop's clients by base URL. :meth:`close_on_shutdown` runs as a task of that loop."""

    def __init__(self, pool_limit: int) -> None:
        self._clients: dict[str, LoopClient] = {}
        self._pool_limit = pool_limit

    def get(self, base_url: str) -> LoopClient:
        """The client for ``base_url``, created on first use (or after it was closed)."""
        client = self._clients.get(base_url)
        if client is None or client.session.closed:
            client = self._clients[base_url] = new_loop_client(base_url, self._pool_limit)
        return client

    async def aclose(self) -> None:
        """Close every session now."""
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.session.close()

    async def close_on_shutdown(self) -> None:
        """Wait forever; close the sessions when the loop cancels its tasks on shutdown."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()
