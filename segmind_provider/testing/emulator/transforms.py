"""Outputs made from inputs, as pure functions of bytes: each shows what it was given.

Background removal keeps the input and makes its background transparent; the upscaler
enlarges it; the edit model reworks it with its prompt drawn on; captions mention the prompt
and the images they describe. Reviewers (and tests) can see that the input arrived.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageChops, ImageFilter, ImageOps

from .render import draw_band, open_image, rng_for
from .validation import ASPECT_RATIOS

# How far (0-255, the largest channel difference) a pixel may be from the border's colour and
# still count as background. Product shots on a plain or softly lit backdrop clear it easily.
BACKGROUND_TOLERANCE = 48
MAX_SIDE = 8192
# A PNG upscale is written a row at a time (nearest neighbour), never as a whole bitmap: real
# upscalers return 16384x16384 PNGs, and clients must be tested with them.
MAX_PNG_SIDE = 16384
IDAT_BYTES = 1 << 20


def remove_background(data: bytes) -> Image.Image:
    """The input in RGBA: pixels close to the colour of its border become transparent."""
    img = open_image(data).convert("RGB")
    width, height = img.size
    border = [img.getpixel((x, y)) for x in range(width) for y in (0, height - 1)]
    border += [img.getpixel((x, y)) for y in range(height) for x in (0, width - 1)]
    background = tuple(sorted(channel)[len(channel) // 2] for channel in zip(*border, strict=True))
    diff = ImageChops.difference(img, Image.new("RGB", img.size, background))
    red, green, blue = diff.split()
    distance = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    mask = distance.point(lambda v: 255 if v > BACKGROUND_TOLERANCE else 0).filter(
        ImageFilter.MedianFilter(3)
    )
    out = img.convert("RGBA")
    out.putalpha(mask)
    return out


def upscale(data: bytes, factor: float) -> Image.Image:
    """The input enlarged `factor` times (capped so no side passes MAX_SIDE)."""
    img = open_image(data)
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    factor = min(factor, MAX_SIDE / max(img.size))
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(size, Image.Resampling.LANCZOS)


def upscale_png(data: bytes, factor: float) -> bytes | None:
    """A PNG of the input enlarged `factor` times (up to MAX_PNG_SIDE a side), encoded row by row
    in bounded memory; None when the result fits MAX_SIDE (the Pillow path does it better)."""
    with Image.open(io.BytesIO(data)) as probe:  # the header only: most upscales fit MAX_SIDE
        source = probe.size
    factor = min(factor, MAX_PNG_SIDE / max(source))
    width, height = max(1, round(source[0] * factor)), max(1, round(source[1] * factor))
    if max(width, height) <= MAX_SIDE:
        return None
    img = open_image(data)
    mode = "RGBA" if "A" in img.getbands() else "RGB"
    img = img.convert(mode)
    colour_type = 6 if mode == "RGBA" else 2
    out = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
    ]
    packer = zlib.compressobj(6)
    pending: list[bytes] = []
    source_row, row = -1, b""
    for y in range(height):
        wanted = y * img.height // height
        if wanted != source_row:
            source_row = wanted
            line = img.crop((0, wanted, img.width, wanted + 1))
            row = b"\x00" + line.resize((width, 1), Image.Resampling.NEAREST).tobytes()
        pending.append(packer.compress(row))
        if sum(map(len, pending)) >= IDAT_BYTES:
            out.append(_chunk(b"IDAT", b"".join(pending)))
            pending = []
    pending.append(packer.flush())
    out += [_chunk(b"IDAT", b"".join(pending)), _chunk(b"IEND", b"")]
    return b"".join(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def edit_size(aspect_ratio: object, source: tuple[int, int]) -> tuple[int, int]:
    """The output size of an edit: the input's for `match_input_image` (or none), else the ratio's."""
    if isinstance(aspect_ratio, str) and aspect_ratio in ASPECT_RATIOS:
        return ASPECT_RATIOS[aspect_ratio]
    return source


def edit(data: bytes, prompt: str, seed: int, aspect_ratio: object, model: str) -> Image.Image:
    """The input fitted to the output size, colour-graded from the prompt and seed, the prompt drawn on."""
    source = open_image(data).convert("RGB")
    size = edit_size(aspect_ratio, source.size)
    img = ImageOps.fit(source, size, Image.Resampling.LANCZOS)
    rng = rng_for(model, prompt, seed)
    tint = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    img = Image.blend(img, tint, 0.25)
    draw_band(
        img, f"edit: {prompt}", f"segmind-emulator · {model} · seed {seed} · {size[0]}x{size[1]}", top=True
    )
    return img


def inset(img: Image.Image, data: bytes) -> Image.Image:
    """Paste a thumbnail of a visual prompt in the top-right corner: it visibly reached the model."""
    thumb = open_image(data).convert("RGB")
    side = max(32, min(img.size) // 4)
    thumb.thumbnail((side, side))
    margin = max(4, min(img.size) // 40)
    img.paste(thumb, (img.width - thumb.width - margin, margin))
    return img


def caption(model: str, prompt: str, images: list[bytes]) -> str:
    """Text that mentions the prompt and the images it was given (their size and mode)."""
    seen = []
    for data in images:
        img = open_image(data)
        seen.append(f"a {img.width}x{img.height} {img.format or 'image'} image")
    about = f" Looking at {', '.join(seen)}." if seen else ""
    return f"{model} caption for “{prompt}”: an emulated description written for this prompt.{about}"
