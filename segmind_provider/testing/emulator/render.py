"""Deterministic placeholder images, sounds and meshes, and the cache that renders each output once, lazily.

Outputs are only drawn when someone fetches them: a benchmark that queues ten thousand jobs
and never downloads them costs no rendering CPU at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import random
import struct
import textwrap
import wave
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Executor

from PIL import Image, ImageDraw, ImageFont

CONTENT_TYPES = {
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "wav": "audio/wav",
    "glb": "model/gltf-binary",
}
_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}


def content_type(fmt: str) -> str:
    return CONTENT_TYPES.get(fmt, "application/octet-stream")


def seed_from_request_id(request_id: str) -> int:
    """A stable seed for requests that gave none, so each job still has a fixed output."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def rng_for(*parts: object) -> random.Random:
    """A generator seeded by everything that should change the picture."""
    return random.Random(hashlib.sha256(repr(parts).encode()).digest())


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_band(img: Image.Image, text: str, footer: str, *, top: bool = False, max_lines: int = 3) -> None:
    """A black band with `text` in large letters and a small footer: what the output was made from."""
    width, height = img.size
    short = min(width, height)
    draw = ImageDraw.Draw(img)
    size = max(12, short // 18)
    lines = textwrap.wrap(text or "(no prompt)", width=max(10, int(width / size * 1.6)))[:max_lines]
    band_h = int(short * 0.08) * (len(lines) + 1)
    y0 = 0 if top else height - band_h
    draw.rectangle((0, y0, width, y0 + band_h), fill=(0, 0, 0) if img.mode == "RGB" else (0, 0, 0, 255))
    y = y0 + short // 60
    for line in lines:
        draw.text((short // 30, y), line, fill="white", font=font(size))
        y += int(short * 0.075)
    draw.text((short // 30, y), footer, fill=(200, 200, 200), font=font(max(10, short // 40)))


def draw_image(model: str, prompt: str, seed: int, size: tuple[int, int], salt: str = "") -> Image.Image:
    """A seeded colour field with shapes, the prompt's first eight words and a footer."""
    width, height = size
    rng = random.Random(
        int.from_bytes(hashlib.sha256(repr((model, prompt, salt)).encode()).digest()[:8], "big") ^ seed
    )
    grid = Image.new("RGB", (4, 4))
    grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16)])
    img = grid.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(6):
        r = rng.randint(short // 16, short // 5)
        x, y = rng.randrange(width), rng.randrange(height)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        box = (x - r, y - r, x + r, y + r)
        if rng.random() < 0.5:
            draw.ellipse(box, outline=colour, width=max(2, short // 128))
        else:
            draw.rectangle(box, outline=colour, width=max(2, short // 128))
    words = " ".join(str(prompt).split()[:8])
    draw_band(img, words, f"segmind-emulator · {model} · seed {seed} · {width}x{height}")
    return img


def encode(img: Image.Image, fmt: str, quality: int = 80) -> bytes:
    """Save in the requested format; alpha survives in png/webp, is flattened for jpg."""
    out = io.BytesIO()
    if fmt == "jpg" and img.mode != "RGB":
        img = img.convert("RGB")
    if fmt == "png":
        img.save(out, "PNG", compress_level=1)
    elif fmt == "webp":
        img.save(out, "WEBP", quality=int(quality), method=0)
    elif fmt in _PIL_FORMATS:
        img.save(out, _PIL_FORMATS[fmt], quality=int(quality))
    else:
        raise ValueError(f"cannot encode images as {fmt!r}")
    return out.getvalue()


def render_wav(model: str, prompt: str, seed: int, seconds: float) -> bytes:
    """A seeded two-tone WAV (16-bit mono, 16 kHz) of ``seconds`` (at most 30): an audio output."""
    rng = rng_for(model, prompt, seed)
    rate, tones = 16000, (rng.uniform(220, 440), rng.uniform(440, 880))
    frames = int(rate * min(max(seconds, 0.1), 30.0))
    samples = (
        int(8000 * math.sin(2 * math.pi * tones[(i * 4 // rate) % 2] * i / rate)) for i in range(frames)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(struct.pack(f"<{frames}h", *samples))
    return out.getvalue()


def render_glb(model: str, seed: int) -> bytes:
    """A binary glTF 2.0 file (one seeded triangle): a 3D output whose container a reader can check."""
    rng = rng_for(model, seed)
    points = [rng.uniform(-1, 1) for _ in range(9)]
    lows = [min(points[axis::3]) for axis in range(3)]
    highs = [max(points[axis::3]) for axis in range(3)]
    binary = struct.pack("<9f", *points)
    gltf = {
        "asset": {"version": "2.0", "generator": f"segmind-emulator {model}"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(binary)}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3", "min": lows, "max": highs}
        ],
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = (
        struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    )
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def open_image(data: bytes) -> Image.Image:
    """Decode fully (not just the header): a broken input is an error here, not a blank output."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


class RenderCache:
    """A bytes-bounded LRU of rendered outputs; concurrent fetches of one key render it once."""

    def __init__(self, max_bytes: int, executor: Executor | None = None) -> None:
        self.max_bytes = max_bytes
        self._executor = executor
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}
        self._size = 0
        self.renders = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget cached outputs and counters (pending renders finish, then land in the fresh cache)."""
        self._items.clear()
        self._size = 0
        self.renders = 0
        self.hits = 0

    def lookup(self, key: Hashable) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return data

    async def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The cached bytes for `key`, or `render()` run once in the executor."""
        data = self.lookup(key)
        if data is not None:
            return data
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.run_in_executor(self._executor, render)
        self._pending[key] = future
        try:
            data = await asyncio.shield(future)
        finally:
            self._pending.pop(key, None)
        self.renders += 1
        self._store(key, data)
        return data

    def _store(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes or key in self._items:
            return
        self._items[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)
