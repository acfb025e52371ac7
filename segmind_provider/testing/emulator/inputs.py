"""Files given to a model: URLs on the emulator's own media host, or base64, as the entry says.

The emulator never fetches the internet. A URL must point at its media address (an uploaded
asset or an earlier job's output); anything else is a 400 naming the field. Base64 data must
decode, and a field that takes an image must hold an image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from .context import Context
from .jobs import job_status
from .models import ModelSpec
from .recipes import Source
from .validation import ParamError, decode_base64


def resolve_sources(
    ctx: Context, request_host: str | None, spec: ModelSpec, params: Mapping[str, Any]
) -> dict[str, list[Source]]:
    """Each file field's inputs as bytes (uploads, base64) or recipes (earlier outputs)."""
    sources: dict[str, list[Source]] = {}
    problems: list[str] = []
    for name, param in spec.media_fields().items():
        value = params.get(name)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        resolved: list[Source] = []
        for i, item in enumerate(items):
            label = f"{name}[{i}]" if isinstance(value, list) else name
            try:
                resolved.append(_resolve(ctx, request_host, label, param, item))
            except ParamError as exc:
                problems.append(str(exc))
        sources[name] = resolved
    if problems:
        raise ParamError("; ".join(problems))
    return sources


def _resolve(
    ctx: Context, request_host: str | None, name: str, param: Mapping[str, Any], value: str
) -> Source:
    media = str(param.get("media", "image"))
    if param.get("encoding", "url") == "url":
        return _from_url(ctx, request_host, name, media, value)
    data = decode_base64(value)
    check_media(name, media, data)
    return data


def _from_url(ctx: Context, request_host: str | None, name: str, media: str, url: str) -> Source:
    path = ctx.addresses.media_path(url, request_host)
    if path is None:
        raise ParamError(
            f"{name}: {url} is not on the emulator's media host ({ctx.addresses.media_url}); the emulator "
            "never fetches other hosts: upload the file to its storage first"
        )
    folder, _, filename = path.removeprefix("/media/").rpartition("/")
    stem, _, ext = filename.rpartition(".")
    if folder == "assets":
        asset = ctx.assets.get(stem)
        if asset is None or asset.ext != ext:
            raise ParamError(f"{name}: no uploaded file at {url}")
        if not asset.content_type.startswith(media + "/"):
            raise ParamError(f"{name}: expects {media}, but {url} is {asset.content_type}")
        return asset.data
    job = ctx.jobs.get(stem) if not folder else None
    if job is None or job.recipe is None or job.recipe.fmt != ext:
        raise ParamError(f"{name}: no output at {url} (unknown or expired request)")
    if job_status(job, ctx.clock.now()) != "COMPLETED":
        raise ParamError(f"{name}: the output at {url} is not ready (its request has not completed)")
    if job.recipe.kind != media:
        raise ParamError(f"{name}: expects {media}, but {url} is a {job.recipe.kind} output")
    return job.recipe


def check_media(name: str, media: str, data: bytes, declared: str | None = None) -> None:
    """Bytes given for an image must decode as one; a video must at least look like MP4/WebM/MOV."""
    if media == "image":
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            what = f"declared {declared} but " if declared else ""
            raise ParamError(f"{name}: {what}the data is not a readable image ({exc})") from None
    elif media == "video" and data[4:8] != b"ftyp" and not data.startswith(b"\x1a\x45\xdf\xa3"):
        raise ParamError(f"{name}: the data is not an MP4, MOV or WebM video")
