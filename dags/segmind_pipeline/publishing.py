"""The run's manifest (JSON) and gallery page (self-contained HTML).

File references in both are relative to the run's folder, so the folder can be copied, synced to a
bucket or opened from disk and still work.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from segmind_pipeline import imaging

MANIFEST_NAME = "manifest.json"
GALLERY_NAME = "index.html"
MANIFEST_VERSION = 1

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


def product_record(
    job: Mapping[str, Any],
    *,
    status: str,
    request_id: str | None = None,
    inference_time: float | None = None,
    files: Mapping[str, str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One manifest entry; the same shape for a published and a failed product."""
    return {
        "product_id": job["product_id"],
        "name": job["name"],
        "tagline": job.get("tagline", ""),
        "status": status,
        "prompt": job["prompt"],
        "seed": job["seed"],
        "aspect_ratio": job["aspect_ratio"],
        "model": job.get("model"),
        "request_id": request_id,
        "inference_time": inference_time,
        "files": dict(files or {}),
        "error": error,
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
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 20px; padding: 20px 32px 40px; }
article { background: var(--card); border-radius: 12px; overflow: hidden; box-shadow: 0 1px 4px rgba(0,0,0,.12); display: flex; flex-direction: column; }
article img { display: block; width: 100%; height: auto; aspect-ratio: 1 / 1; object-fit: cover; }
.body { padding: 12px 16px 16px; }
h2 { margin: 0 0 2px; font-size: 17px; }
.tagline { margin: 0 0 8px; color: var(--muted); }
.prompt { font-size: 13px; color: var(--muted); margin: 0 0 10px; }
.links a { margin-right: 10px; font-size: 13px; color: inherit; }
.facts { font-size: 12px; color: var(--muted); margin-top: 8px; font-family: ui-monospace, monospace; word-break: break-all; }
.failed .placeholder { aspect-ratio: 1 / 1; display: flex; align-items: center; justify-content: center; background: repeating-linear-gradient(45deg, #d9d2c5, #d9d2c5 12px, #e6e0d4 12px, #e6e0d4 24px); color: var(--bad); font-weight: 600; }
.error { color: var(--bad); font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _card(record: Mapping[str, Any]) -> str:
    facts = f"seed {_e(record['seed'])} · {_e(record['aspect_ratio'])}"
    if record.get("request_id"):
        facts += f" · request {_e(record['request_id'])}"
    if record.get("inference_time") is not None:
        facts += f" · {float(record['inference_time']):.2f} s"
    head = (
        f"<h2>{_e(record['name'])}</h2><p class=tagline>{_e(record.get('tagline'))}</p>"
        f"<p class=prompt>{_e(record['prompt'])}</p>"
    )
    if record["status"] != "published":
        return (
            f'<article class=failed id="{_e(record["product_id"])}">'
            f"<div class=placeholder>not generated</div><div class=body>{head}"
            f"<p class=error>{_e(record.get('error') or 'failed')}</p>"
            f"<div class=facts>{facts}</div></div></article>"
        )
    files = record.get("files", {})
    links = " ".join(
        f'<a href="{_e(files[key])}">{label}</a>'
        for key, label in (
            ("square", "square"),
            ("story", "story 9:16"),
            ("link_card", "link card"),
            ("original", "original"),
        )
        if key in files
    )
    image = files.get("thumbnail") or files.get("square")
    return (
        f'<article id="{_e(record["product_id"])}">'
        f'<a href="{_e(files.get("square", image))}"><img src="{_e(image)}" alt="{_e(record["name"])}" '
        f'width="360" height="360"></a><div class=body>{head}'
        f"<div class=links>{links}</div><div class=facts>{facts}</div></div></article>"
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
    original: bytes,
    *,
    suffix: str,
    request_id: str | None,
    inference_time: float | None,
) -> dict[str, Any]:
    """Write the original and every social format of one product into ``folder/<product_id>/``.

    Returns the manifest entry, whose file names are relative to ``folder``.
    """
    product_id = job["product_id"]
    formats = imaging.make_formats(
        original, title=job["name"], subtitle=job.get("tagline", ""), brand=job.get("brand", "")
    )
    target = folder / product_id
    target.mkdir(parents=True, exist_ok=True)
    files = {"original": f"{product_id}/original{suffix}"}
    (target / f"original{suffix}").write_bytes(original)
    for name, data in formats.items():
        (target / FILE_NAMES[name]).write_bytes(data)
        files[name] = f"{product_id}/{FILE_NAMES[name]}"
    return product_record(
        job, status="published", request_id=request_id, inference_time=inference_time, files=files
    )


def write_manifest_and_gallery(folder: F, manifest: Mapping[str, Any]) -> tuple[F, F]:
    """Write ``manifest.json`` and ``index.html`` into ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path: F = folder / MANIFEST_NAME
    gallery_path: F = folder / GALLERY_NAME
    manifest_path.write_text(manifest_json(manifest), encoding="utf-8")
    gallery_path.write_text(render_gallery(manifest), encoding="utf-8")
    return manifest_path, gallery_path
