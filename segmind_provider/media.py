"""Media formats: what a file is from its first bytes, its extensions, and whether an image decodes.

Shared by ``inputs`` (files going to Segmind) and ``outputs`` (files coming back), and the small
previews a reviewer looks at (``preview_image``, ``thumbnail``).
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from segmind_provider import integrity
from segmind_provider.exceptions import SegmindOutputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "EXTENSIONS",
    "KIND_OF_EXTENSION",
    "MEDIA_TYPES",
    "SNIFF_BYTES",
    "check_size",
    "data_url",
    "decode_base64",
    "decode_data_uri",
    "decode_problem",
    "extension_for",
    "normalize_format",
    "open_image",
    "preview_image",
    "redact_url",
    "sniff_format",
    "thumbnail",
]

SNIFF_BYTES = 16
EXTENSIONS: dict[str, str] = {
    "png": ".png",
    "jpeg": ".jpg",
    "webp": ".webp",
    "gif": ".gif",
    "mp4": ".mp4",
    "webm": ".webm",
    "mp3": ".mp3",
    "wav": ".wav",
    "ogg": ".ogg",
    "flac": ".flac",
    "glb": ".glb",
}
KIND_OF_EXTENSION: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".webp": "webp",
    ".gif": "gif",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".webm": "webm",
    ".mp3": "mp3",
    ".wav": "wav",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".opus": "ogg",
    ".flac": "flac",
    ".glb": "glb",
}
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "glb": "model/gltf-binary",
}


def normalize_format(name: str | None) -> str | None:
    """Canonical kind for a format or extension name: "jpg", "JPEG", ".jpg" -> "jpeg"."""
    if not name:
        return None
    key = name.strip().lower().lstrip(".")
    return "jpeg" if key in ("jpg", "jpe", "jpeg") else key


def sniff_format(head: bytes) -> str | None:
    """The kind of file from its first bytes (png, jpeg, webp, gif, mp4, webm, mp3, wav, ogg, flac, glb) or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"glTF"):
        return "glb"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def extension_for(kind: str | None, content_type: str) -> str:
    if kind in EXTENSIONS:
        return EXTENSIONS[kind]
    guessed = mimetypes.guess_extension(content_type.split(";")[0].strip()) if content_type else None
    return guessed or ".bin"


def decode_problem(source: Path | bytes, kind: str | None) -> str | None:
    """Why a file (a path, or its bytes) of ``kind`` is not whole, or None when it is (or is not checked).

    Each format is checked by its own structure and checksums, in bounded memory
    (``segmind_provider.integrity``): valid magic bytes, or a lenient decode, are not enough.
    """
    return integrity.problem(source, kind)


_CHECKER = ((236, 236, 236), (206, 206, 206))


def open_image(data: bytes) -> PILImage.Image:
    """An image decoded in full and upright (EXIF); ValueError when the bytes are no readable image."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc


def preview_image(data: bytes, side: int) -> PILImage.Image:
    """An image fitted in ``side`` pixels, RGB, transparency over a checkerboard (the way editors show
    it); ValueError when the bytes are no readable image."""
    from PIL import Image, ImageDraw

    image = open_image(data)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    if "A" not in image.getbands():
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    cell = max(6, min(rgba.size) // 24)
    board = Image.new("RGB", rgba.size, _CHECKER[0])
    draw = ImageDraw.Draw(board)
    for y in range(0, rgba.height, cell):
        for x in range((y // cell) % 2 * cell, rgba.width, 2 * cell):
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=_CHECKER[1])
    board.paste(rgba, (0, 0), rgba)
    return board


def thumbnail(data: bytes, side: int, quality: int = 84) -> bytes:
    """A small JPEG of an image (the whole image, fitted in ``side``): what a gallery or a reviewer shows."""
    buffer = io.BytesIO()
    preview_image(data, side).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/=_-]+")


def check_size(size: int, max_bytes: int) -> None:
    """Refuse an output over the cap."""
    if size > max_bytes:
        raise SegmindOutputError(f"the output is larger than the cap of {max_bytes} bytes")


def data_url(data: bytes, media_type: str) -> str:
    """``data:<type>;base64,...``: how Segmind's storage takes an upload."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(text: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and media type of a ``data:`` URI (base64 or percent-encoded)."""
    header, sep, body = text[5:].partition(",")
    if not sep:
        raise SegmindOutputError("malformed data: URI (no comma)")
    params = header.split(";")
    content_type = params[0] or "text/plain"
    if "base64" in (p.strip().lower() for p in params[1:]):
        return decode_base64(body, max_bytes), content_type
    data = unquote_to_bytes(body)
    check_size(len(data), max_bytes)
    return data, content_type


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Raw base64 (standard or URL-safe, padding optional), size-checked before decoding."""
    compact = "".join(text.split())
    if not compact or not _BASE64_ALPHABET.fullmatch(compact):
        preview = text if len(text) <= 60 else text[:57] + "..."
        raise SegmindOutputError(f"the output {preview!r} is neither an http(s) URL, a data: URI nor base64")
    unpadded = compact.rstrip("=")
    check_size(len(unpadded) * 3 // 4, max_bytes)  # the exact decoded size, checked before decoding
    padded = unpadded + "=" * (-len(unpadded) % 4)
    try:
        if "-" in padded or "_" in padded:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SegmindOutputError(f"the output is not valid base64: {exc}") from None


def redact_url(url: str) -> str:
    """A URL fit for logs and errors: no user:password, query or fragment (signed URLs carry tokens there)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
