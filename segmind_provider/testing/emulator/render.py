"""Deterministic placeholder images, rendered lazily and cached.

Images are only drawn when someone fetches them: a benchmark that queues ten
thousand jobs and never downloads them costs no rendering CPU at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .validation import CONTENT_TYPES

RenderKey = tuple[Any, ...]


def seed_from_request_id(request_id: str) -> int:
    """A stable seed for requests that gave none, so each job still has a fixed image."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def render_key(model: str, params: dict[str, Any], seed: int) -> RenderKey:
    """Everything that changes the picture; equal keys give byte-identical images."""
    return (
        model,
        params.get("prompt", ""),
        seed,
        params["width"],
        params["height"],
        params["output_format"],
        params.get("output_quality", 80),
        params.get("aspect_ratio"),
        params.get("safety_tolerance"),
        params.get("prompt_upsampling"),
        params.get("image_prompt"),
    )


def render_image(key: RenderKey) -> bytes:
    """Draw a seeded colour field with shapes, the prompt's first words and the seed."""
    model, prompt, seed, width, height, fmt, quality = key[:7]
    digest = hashlib.sha256(repr(key).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big") ^ seed)
    grid = Image.new("RGB", (4, 4))
    grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16)])
    img = grid.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(6):
        r = rng.randint(short // 16, short // 5)
        x, y = rng.randrange(width), rng.randrange(height)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=max(2, short // 128))
        else:
            draw.rectangle((x - r, y - r, x + r, y + r), outline=colour, width=max(2, short // 128))
    words = " ".join(str(prompt).split()[:8]) or "(no prompt)"
    title = ImageFont.load_default(size=max(12, short // 18))
    small = ImageFont.load_default(size=max(10, short // 40))
    lines = textwrap.wrap(words, width=max(10, int(width / (short // 18) * 1.6)))[:3]
    band_h = int(short * 0.08) * (len(lines) + 1)
    draw.rectangle((0, height - band_h, width, height), fill=(0, 0, 0))
    y = height - band_h + short // 60
    for line in lines:
        draw.text((short // 30, y), line, fill=(255, 255, 255), font=title)
        y += int(short * 0.075)
    footer = f"segmind-emulator · {model} · seed {seed} · {width}x{height} {fmt}"
    draw.text((short // 30, y), footer, fill=(200, 200, 200), font=small)
    out = io.BytesIO()
    if fmt == "png":
        img.save(out, "PNG", compress_level=1)
    elif fmt == "jpg":
        img.save(out, "JPEG", quality=int(quality))
    else:
        img.save(out, "WEBP", quality=int(quality), method=0)
    return out.getvalue()


def content_type(fmt: str) -> str:
    return CONTENT_TYPES[fmt]


class RenderCache:
    """A bytes-bounded LRU of rendered images; concurrent fetches of one key render it once."""

    def __init__(self, max_bytes: int, executor: Executor | None = None) -> None:
        self.max_bytes = max_bytes
        self._executor = executor
        self._items: OrderedDict[RenderKey, bytes] = OrderedDict()
        self._pending: dict[RenderKey, asyncio.Future[bytes]] = {}
        self._size = 0
        self.renders = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget cached images and counters (pending renders finish, then land in the fresh cache)."""
        self._items.clear()
        self._size = 0
        self.renders = 0
        self.hits = 0

    async def get(self, key: RenderKey, render: Callable[[RenderKey], bytes] = render_image) -> bytes:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return data
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.run_in_executor(self._executor, render, key)
        self._pending[key] = future
        try:
            data = await asyncio.shield(future)
        finally:
            self._pending.pop(key, None)
        self.renders += 1
        self._store(key, data)
        return data

    def _store(self, key: RenderKey, data: bytes) -> None:
        if len(data) > self.max_bytes or key in self._items:
            return
        self._items[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)
