"""The run's manifest (JSON) and gallery page (self-contained HTML).

File references in both are relative to the run's folder, so the folder can be copied, synced to a
bucket or opened from disk and still work.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from segmind_pipeline import imaging

MANIFEST_NAME = "manifest.json"
GALLERY_NAME = "index.html"
MANIFEST_VERSION = 2

#: A product's stages in the order they happen (and are shown), with their gallery labels.
STAGES = {
    "photo": "photo",
    "cutout": "background removed",
    "scene": "scene",
    "upscaled": "hero, upscaled",
    "clip": "clip",
}
IMAGE_STAGES = ("photo", "cutout", "scene", "upscaled")

#: File name of each published format inside a product's folder.
FILE_NAMES = {
    "square": "square.jpg",
    "story": "story.jpg",
    "link_card": "link_card.jpg",
    "thumbnail": "thumbnail.jpg",
}


class Folder(Protocol):
    """What publishing needs from a destination: ``pathlib.Path`` and ``ObjectStoragePath`` both fit."""

    def __truediv__(self, other: str, /) -> Any: ...
    def mkdir(self, *args: Any, **kwargs: Any) -> Any: ...
    def write_bytes(self, *args: Any, **kwargs: Any) -> Any: ...
    def write_text(self, *args: Any, **kwargs: Any) -> Any: ...


F = TypeVar("F", bound=Folder)


@dataclass(frozen=True)
class StageFile:
    """One stage's output as the pipeline stored it: the bytes, the extension, the request that made it."""

    data: bytes
    suffix: str
    request_id: str | None = None


def product_record(
    job: Mapping[str, Any],
    *,
    status: str,
    files: Mapping[str, str] | None = None,
    previews: Mapping[str, str] | None = None,
    caption: str | None = None,
    request_ids: Mapping[str, str | None] | None = None,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One manifest entry; the same shape for a published and a failed product."""
    problems = dict(errors or {})
    return {
        "product_id": job["product_id"],
        "name": job["name"],
        "tagline": job.get("tagline", ""),
        "status": status,
        "hero": bool(job.get("hero")),
        "scene_prompt": job.get("scene_prompt"),
        "seed": job.get("seed"),
        "aspect_ratio": job.get("aspect_ratio"),
        "caption": caption,
        "request_ids": {k: v for k, v in (request_ids or {}).items() if v},
        "files": dict(files or {}),
        "previews": dict(previews or {}),
        "errors": problems,
        "error": "; ".join(f"{stage}: {text}" for stage, text in problems.items()) or None,
    }


def build_manifest(
    records: Iterable[Mapping[str, Any]],
    *,
    dag_id: str,
    run_id: str,
    run_date: dt.date,
    campaign: str,
    brand: str,
    publish_uri: str,
    approved_by: str | None = None,
    generated_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The run's manifest: who was published, who failed and why, and where every file is."""
    products = [dict(r) for r in records]
    published = sum(1 for r in products if r["status"] == "published")
    return {
        "manifest_version": MANIFEST_VERSION,
        "dag_id": dag_id,
        "run_id": run_id,
        "date": run_date.isoformat(),
        "campaign": campaign,
        "brand": brand,
        "publish_uri": publish_uri,
        "approved_by": approved_by,
        "generated_at": (generated_at or dt.datetime.now(dt.timezone.utc)).isoformat(),
        "counts": {"total": len(products), "published": published, "failed": len(products) - published},
        "products": products,
    }


def manifest_json(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


_CSS = """
:root { color-scheme: light dark; --bg: #f4f1ea; --card: #fff; --ink: #1d2421; --muted: #5d6b66; --bad: #a23b2a; }
@media (prefers-color-scheme: dark) { :root { --bg: #151917; --card: #1f2522; --ink: #eef2ef; --muted: #9fb0a9; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--ink); }
header { padding: 28px 32px 8px; }
h1 { margin: 0 0 4px; font-size: 26px; }
.meta { color: var(--muted); margin: 0; }
main { display: grid; grid-template-columns: 1fr; gap: 20px; padding: 20px 32px 40px; max-width: 1400px; }
article { background: var(--card); border-radius: 12px; overflow: hidden; box-shadow: 0 1px 4px rgba(0,0,0,.12); }
.stages { display: flex; flex-wrap: wrap; gap: 12px; padding: 16px 16px 0; }
figure { margin: 0; width: 200px; }
figure img, figure video { display: block; width: 200px; height: 200px; object-fit: contain; background: #e8e5dd; border-radius: 6px; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
.caption { margin: 0 0 10px; padding-left: 10px; border-left: 3px solid var(--muted); }
.body { padding: 12px 16px 16px; }
h2 { margin: 0 0 2px; font-size: 17px; }
.tagline { margin: 0 0 8px; color: var(--muted); }
.prompt { font-size: 13px; color: var(--muted); margin: 0 0 10px; }
.links a { margin-right: 10px; font-size: 13px; color: inherit; }
.facts { font-size: 12px; color: var(--muted); margin-top: 8px; font-family: ui-monospace, monospace; word-break: break-all; }
.placeholder { width: 200px; height: 200px; border-radius: 6px; display: flex; align-items: center; justify-content: center; background: repeating-linear-gradient(45deg, #d9d2c5, #d9d2c5 12px, #e6e0d4 12px, #e6e0d4 24px); color: var(--bad); font-weight: 600; }
.error { color: var(--bad); font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _stage(record: Mapping[str, Any], stage: str) -> str:
    files, previews = record.get("files", {}), record.get("previews", {})
    label = _e(STAGES[stage])
    if stage in previews:
        return (
            f'<figure><a href="{_e(files.get(stage, previews[stage]))}"><img src="{_e(previews[stage])}" '
            f'alt="{_e(record["name"])}: {label}" width="200" height="200"></a><figcaption>{label}</figcaption></figure>'
        )
    if stage in files:  # the clip: a video the browser plays from the same folder
        return (
            f'<figure><video src="{_e(files[stage])}" controls muted loop preload="metadata" width="200" '
            f'height="200"></video><figcaption>{label}</figcaption></figure>'
        )
    if stage in record.get("errors", {}):
        return f"<figure><div class=placeholder>not generated</div><figcaption>{label}</figcaption></figure>"
    return ""


def _formats(record: Mapping[str, Any]) -> str:
    """The last stage: the social formats made from the scene (their thumbnail, linking the square post)."""
    files = record.get("files", {})
    if "thumbnail" not in files:
        return ""
    return (
        f'<figure><a href="{_e(files.get("square", files["thumbnail"]))}"><img src="{_e(files["thumbnail"])}" '
        f'alt="{_e(record["name"])}: social formats" width="200" height="200"></a>'
        "<figcaption>social formats</figcaption></figure>"
    )


def _card(record: Mapping[str, Any]) -> str:
    """One product: every stage it went through, its caption, its formats and what went wrong."""
    ids = " · ".join(f"{_e(k)} {_e(v)}" for k, v in record.get("request_ids", {}).items())
    facts = f"seed {_e(record.get('seed'))} · {_e(record.get('aspect_ratio'))}" + (f" · {ids}" if ids else "")
    caption = f"<p class=caption>{_e(record['caption'])}</p>" if record.get("caption") else ""
    files = record.get("files", {})
    links = " ".join(
        f'<a href="{_e(files[key])}">{label}</a>'
        for key, label in (("square", "square"), ("story", "story 9:16"), ("link_card", "link card"))
        if key in files
    )
    errors = "".join(
        f"<p class=error>{_e(stage)}: {_e(text)}</p>" for stage, text in record.get("errors", {}).items()
    )
    hero = " · hero" if record.get("hero") else ""
    return (
        f'<article{" class=failed" if record["status"] != "published" else ""} id="{_e(record["product_id"])}">'
        f"<div class=stages>{''.join(_stage(record, stage) for stage in STAGES)}{_formats(record)}</div>"
        f"<div class=body><h2>{_e(record['name'])}{hero}</h2><p class=tagline>{_e(record.get('tagline'))}</p>"
        f"{caption}<p class=prompt>{_e(record.get('scene_prompt'))}</p>"
        f"<div class=links>{links}</div>{errors}<div class=facts>{facts}</div></div></article>"
    )


def render_gallery(manifest: Mapping[str, Any]) -> str:
    """A single HTML file with inline CSS and no scripts or external resources; images are relative
    links into the run's folder, so the page works from disk, a static host or a bucket."""
    counts = manifest["counts"]
    cards = "\n".join(_card(r) for r in manifest["products"])
    summary = f"{counts['published']} of {counts['total']} products published"
    if counts["failed"]:
        summary += f", {counts['failed']} failed"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(manifest["brand"])} · {_e(manifest["campaign"])} · {_e(manifest["date"])}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{_e(manifest["brand"])} · {_e(manifest["campaign"])}</h1>
<p class=meta>{_e(manifest["date"])} · {summary} · run {_e(manifest["run_id"])} ·
<a href="{MANIFEST_NAME}">manifest.json</a></p>
</header>
<main>
{cards}
</main>
</body>
</html>
"""


def publish_product(
    folder: Folder,
    job: Mapping[str, Any],
    stages: Mapping[str, StageFile],
    *,
    caption: str | None = None,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write one product's stage outputs, their previews and (from its scene) every social format
    into ``folder/<product_id>/``; return the manifest entry, whose file names are relative to ``folder``.

    A product without a scene is ``failed``: its earlier stages are still published, for the record.
    """
    product_id = job["product_id"]
    target = folder / product_id
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    previews: dict[str, str] = {}
    for stage, output in stages.items():
        (target / f"{stage}{output.suffix}").write_bytes(output.data)
        files[stage] = f"{product_id}/{stage}{output.suffix}"
        if stage in IMAGE_STAGES:
            (target / f"preview-{stage}.jpg").write_bytes(imaging.stage_preview(output.data))
            previews[stage] = f"{product_id}/preview-{stage}.jpg"
    scene = stages.get("scene")
    if scene is not None:
        formats = imaging.make_formats(
            scene.data, title=job["name"], subtitle=job.get("tagline", ""), brand=job.get("brand", "")
        )
        for name, data in formats.items():
            (target / FILE_NAMES[name]).write_bytes(data)
            files[name] = f"{product_id}/{FILE_NAMES[name]}"
    return product_record(
        job,
        status="published" if scene is not None else "failed",
        files=files,
        previews=previews,
        caption=caption,
        request_ids={stage: output.request_id for stage, output in stages.items()},
        errors=errors,
    )


def write_manifest_and_gallery(folder: F, manifest: Mapping[str, Any]) -> tuple[F, F]:
    """Write ``manifest.json`` and ``index.html`` into ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path: F = folder / MANIFEST_NAME
    gallery_path: F = folder / GALLERY_NAME
    manifest_path.write_text(manifest_json(manifest), encoding="utf-8")
    gallery_path.write_text(render_gallery(manifest), encoding="utf-8")
    return manifest_path, gallery_path
