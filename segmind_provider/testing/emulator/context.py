"""What the request handlers are given instead of the server: the state's pieces they read, the
addresses (to build URLs and to know the media host) and the outputs (rendering).

A leaf for the handler modules: it imports none of them and not `app.py`, which builds a
`Context` and passes it to each module's `add_routes`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .clock import Clock
from .config import EmulatorConfig
from .control import service_urls
from .jobs import Jobs
from .models import ModelSpec
from .recipes import Recipe, Source, render_recipe, text_output
from .render import RenderCache
from .state import Assets, Credits, Keys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1"}


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Addresses:
    """Where the emulator listens (set once bound) and the URLs it hands out."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self.host = "127.0.0.1"
        self.port = 0
        self.media_port = 0

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def base_url(self) -> str:
        return f"http://{host_for_url(self.client_host)}:{self.port}"

    @property
    def media_url(self) -> str:
        return f"http://{host_for_url(self.client_host)}:{self.media_port}"

    def as_dict(self) -> dict[str, str]:
        """API, media, storage and account base URLs (the last two are path prefixes on the API port)."""
        return {"base_url": self.base_url, "media_url": self.media_url, **service_urls(self.base_url)}

    def api_base(self, request: web.Request) -> str:
        """The API's address as this client reached it (its own Host header), or the public URL."""
        return self._config.public_url or f"{request.scheme}://{request.host}"

    def media_base(self, request: web.Request) -> str:
        if self._config.media_public_url:
            return self._config.media_public_url
        return f"http://{host_for_url(request.url.host or self.client_host)}:{self.media_port}"

    def media_path(self, url: str, request_host: str | None) -> str | None:
        """The path of `url` if it points at this emulator's media address, else None."""
        public = self._config.media_public_url
        if public and url.startswith(public + "/"):
            return urlsplit(url).path
        parts = urlsplit(url)
        names = _LOCAL_NAMES | {self.client_host, request_host or ""}
        try:
            port = parts.port
        except ValueError:
            return None
        ours = parts.scheme == "http" and parts.hostname in names and port == self.media_port
        return parts.path if ours and parts.path.startswith("/media/") else None


class Outputs:
    """Jobs' outputs made from their recipes: rendered off the event loop, cached by recipe."""

    def __init__(self, cache_bytes: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segmind-emulator-render")
        self.cache = RenderCache(cache_bytes, self._executor)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, func: Callable[[], Any]) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, func)

    async def _source_bytes(self, source: Source) -> bytes:
        return source if isinstance(source, bytes) else await self.media(source)

    async def _input_bytes(self, recipe: Recipe) -> dict[str, list[bytes]]:
        return {name: [await self._source_bytes(s) for s in items] for name, items in recipe.inputs}

    async def media(self, recipe: Recipe) -> bytes:
        """The rendered output of a recipe (its inputs rendered first when they are outputs too)."""
        cached = self.cache.lookup(recipe)
        if cached is not None:
            return cached
        inputs = await self._input_bytes(recipe)
        return await self.cache.get(recipe, functools.partial(render_recipe, recipe, inputs))

    async def text(self, recipe: Recipe) -> Any:
        """A text or JSON model's answer."""
        inputs = await self._input_bytes(recipe)
        return await self._run(functools.partial(text_output, recipe, inputs))


@dataclass(frozen=True)
class Context:
    """The API's handlers' view of the emulator: no server, no admin powers."""

    config: EmulatorConfig
    clock: Clock
    models: dict[str, ModelSpec]
    keys: Keys
    credits: Credits
    jobs: Jobs
    assets: Assets
    addresses: Addresses
    outputs: Outputs
