"""Segmind storage: `POST {storage_url}/upload-asset` with data URLs, files served from the media host.

As the official SDK 1.3 sends it: `{"data_urls": ["data:<type>;base64,..."]}`, answered with
`{"file_urls": [...], "message": ...}`. Each upload gets a new URL (no de-duplication), so a
client that uploads one file twice is visible in the call log, where each upload call lists
its files' sha256, size, type and URL.
"""

from __future__ import annotations

import mimetypes
from functools import partial
from typing import Any

from aiohttp import web

from .context import Context
from .gate import Gate
from .inputs import check_media
from .responses import error, json_response, log_detail, read_object
from .validation import ParamError, decode_base64

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "video/mp4": "mp4"}


def add_routes(app: web.Application, ctx: Context, gate: Gate, prefix: str) -> None:
    app.router.add_post(prefix + "/upload-asset", gate("upload", partial(upload, ctx)))


def add_media_routes(app: web.Application, ctx: Context, gate: Gate) -> None:
    app.router.add_get("/media/assets/{name}", gate("media", partial(asset, ctx), auth=False))


def extension(content_type: str) -> str:
    guessed = mimetypes.guess_extension(content_type) or ".bin"
    return _EXTENSIONS.get(content_type, guessed.lstrip("."))


def parse_data_url(name: str, value: Any, limit: int) -> tuple[str, bytes]:
    """`data:<type>;base64,<data>` to (type, bytes); the type must match the bytes for images and videos."""
    if not isinstance(value, str) or not value.startswith("data:"):
        raise ParamError(f"{name}: must be a data URL (data:<type>;base64,...)")
    header = value[5 : value.find(",")] if "," in value else ""
    content_type = header.removesuffix(";base64").strip().lower()
    if not header.endswith(";base64") or "/" not in content_type:
        raise ParamError(f"{name}: must be a data URL with a media type and ;base64")
    try:
        data = decode_base64(value)
    except ValueError:
        raise ParamError(f"{name}: the base64 data does not decode") from None
    if not data:
        raise ParamError(f"{name}: the file is empty")
    if len(data) > limit:
        raise ParamError(f"{name}: the file is {len(data) / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB limit")
    if content_type != "image/svg+xml":  # vector images are not Pillow's to check
        check_media(name, content_type.split("/")[0], data, declared=content_type)
    return content_type, data


async def upload(ctx: Context, request: web.Request) -> web.StreamResponse:
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    data_urls = body.get("data_urls")
    if not isinstance(data_urls, list) or not data_urls:
        return error(400, "data_urls: required, a non-empty list of data URLs")
    limit = int(ctx.config.max_upload_mb * 1_000_000)
    files: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for i, value in enumerate(data_urls):
        try:
            files.append(parse_data_url(f"data_urls[{i}]", value, limit))
        except ParamError as exc:
            problems.append(str(exc))
    if problems:
        return error(400, "; ".join(problems))
    base = ctx.addresses.media_base(request)
    urls, logged = [], []
    for content_type, data in files:
        asset_id, asset = ctx.assets.add(data, content_type, extension(content_type))
        url = f"{base}/media/assets/{asset_id}.{asset.ext}"
        urls.append(url)
        logged.append({"sha256": asset.sha256, "size": len(data), "content_type": content_type, "url": url})
    log_detail(files=logged)
    return json_response({"file_urls": urls, "message": f"{len(urls)} file(s) uploaded successfully"})


async def asset(ctx: Context, request: web.Request) -> web.StreamResponse:
    """An uploaded file on the media host (no key needed, as on Segmind's CDN)."""
    stem, _, ext = request.match_info["name"].rpartition(".")
    found = ctx.assets.get(stem)
    if found is None or found.ext != ext:
        return error(404, "Not found")
    headers = {"Cache-Control": "public, max-age=31536000", "ETag": f'"{found.sha256}"'}
    return web.Response(body=found.data, content_type=found.content_type, headers=headers)
