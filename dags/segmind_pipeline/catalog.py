"""The product catalog: the photos a brand owns, and what the nightly run makes of each one.

Every product goes through the same stages: its photo's background removed (``cutout``), the
cut-out product composed into a generated scene by the edit model (``scene``), a caption written
by the text model (``caption``). The catalog's hero product also gets its scene upscaled and a
short clip. ``build_jobs`` turns the catalog and the run's date into one plain-JSON job per product:
the keys the per-product task group takes, and the product facts the review and publish steps need.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_CATALOG_PATH = DATA_DIR / "product_catalog.json"

#: The Segmind model of each stage (their entries: docs/models.md).
CUTOUT_MODEL = "bg-removal-v2"
SCENE_MODEL = "flux-kontext-pro"
CAPTION_MODEL = "llava-v1.6"
UPSCALE_MODEL = "clarity-upscaler"
CLIP_MODEL = "kling-o1-image-to-video"

#: Placeholders a template may use; anything else is a catalog error caught before any request.
TEMPLATE_FIELDS = ("date", "year", "month", "weekday", "season", "name", "brand", "tagline")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SCENE_RATIOS = frozenset(
    {"match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4"}
)


class CatalogError(ValueError):
    """The catalog file is malformed: raised at plan time, before any paid request is made."""


@dataclass(frozen=True)
class Product:
    """One catalog entry: the photo, and the scene the edit model is asked to put the product in."""

    id: str
    name: str
    tagline: str
    photo: str
    scene: str
    aspect_ratio: str
    seed: int


@dataclass(frozen=True)
class Catalog:
    """A campaign: a brand, its products, the hero product and the prompts shared by all products."""

    campaign: str
    brand: str
    hero: str
    caption_prompt: str
    clip_prompt: str
    products: tuple[Product, ...]
    scene_defaults: dict[str, Any] = field(default_factory=dict)
    upscale: dict[str, Any] = field(default_factory=dict)
    clip_duration: int = 5


def season_of(day: dt.date) -> str:
    """Northern-hemisphere meteorological season, the word marketing prompts actually use."""
    return {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring"}.get(
        day.month, "summer" if day.month in (6, 7, 8) else "autumn"
    )


def render_prompt(template: str, day: dt.date, **facts: str) -> str:
    """Fill a template with the run's date and the product's facts; unknown placeholders raise."""
    values = {
        "date": day.isoformat(),
        "year": str(day.year),
        "month": day.strftime("%B"),
        "weekday": day.strftime("%A"),
        "season": season_of(day),
        **{key: facts.get(key, "") for key in ("name", "brand", "tagline")},
    }
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None and field_name not in values:
            raise CatalogError(f"unknown placeholder {{{field_name}}} in template {template!r}")
    return template.format(**values)


def load_catalog(path: str | Path = DEFAULT_CATALOG_PATH) -> Catalog:
    """Read and check the catalog so a typo fails the plan task, not a dozen paid requests."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    base = Path(path).resolve().parent
    try:
        products = tuple(
            Product(
                id=str(p["id"]),
                name=str(p["name"]),
                tagline=str(p.get("tagline", "")),
                photo=_photo_location(str(p["photo"]), base),
                scene=str(p["scene"]),
                aspect_ratio=str(p.get("aspect_ratio", "match_input_image")),
                seed=int(p["seed"]),
            )
            for p in raw["products"]
        )
        catalog = Catalog(
            campaign=str(raw.get("campaign", "")),
            brand=str(raw.get("brand", "")),
            hero=str(raw["hero"]),
            caption_prompt=str(raw["caption_prompt"]),
            clip_prompt=str(raw["clip_prompt"]),
            products=products,
            scene_defaults=dict(raw.get("scene_defaults", {})),
            upscale=dict(raw.get("upscale", {})),
            clip_duration=int(raw.get("clip_duration", 5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"malformed catalog {path}: {exc!r}") from exc
    _check(catalog)
    return catalog


def _photo_location(photo: str, base: Path) -> str:
    """A relative photo path is relative to the catalog file; URIs (s3://...) and absolute paths stay."""
    if urlsplit(photo).scheme or Path(photo).is_absolute():
        return photo
    return str(base / photo)


def _check(catalog: Catalog) -> None:
    if not catalog.products:
        raise CatalogError("the catalog has no products")
    seen: set[str] = set()
    for product in catalog.products:
        if not _SLUG.match(product.id):
            raise CatalogError(f"product id {product.id!r} must be a lowercase slug (used in file names)")
        if product.id in seen:
            raise CatalogError(f"duplicate product id {product.id!r}")
        seen.add(product.id)
        if product.aspect_ratio not in _SCENE_RATIOS:
            raise CatalogError(f"product {product.id!r}: unsupported aspect ratio {product.aspect_ratio!r}")
        render_prompt(product.scene, dt.date(2000, 1, 1))
    if catalog.hero not in seen:
        raise CatalogError(f"hero {catalog.hero!r} is not a product of the catalog")
    render_prompt(catalog.caption_prompt, dt.date(2000, 1, 1))
    render_prompt(catalog.clip_prompt, dt.date(2000, 1, 1))


def build_jobs(catalog: Catalog, day: dt.date, raw_dir: str) -> list[dict[str, Any]]:
    """One plain-JSON dict per product, in catalog order (= map index).

    Keys the task group takes: ``photo``, ``cutout_path``, ``scene``, ``scene_path``, ``caption``;
    the hero's job also has ``upscale``, ``upscale_path``, ``clip``, ``clip_path``. Output paths
    have no extension: the stored file gets the one its content has.
    """
    jobs = []
    for product in catalog.products:
        facts = {"name": product.name, "brand": catalog.brand, "tagline": product.tagline}
        folder = f"{raw_dir.rstrip('/')}/{product.id}"
        scene_prompt = render_prompt(product.scene, day, **facts)
        job: dict[str, Any] = {
            "product_id": product.id,
            "name": product.name,
            "tagline": product.tagline,
            "brand": catalog.brand,
            "campaign": catalog.campaign,
            "hero": product.id == catalog.hero,
            "scene_prompt": scene_prompt,
            "seed": product.seed,
            "aspect_ratio": product.aspect_ratio,
            "photo": product.photo,
            "cutout_path": f"{folder}/cutout",
            "scene": {
                **catalog.scene_defaults,
                "prompt": scene_prompt,
                "aspect_ratio": product.aspect_ratio,
                "seed": product.seed,
            },
            "scene_path": f"{folder}/scene",
            "caption": {"prompt": render_prompt(catalog.caption_prompt, day, **facts)},
        }
        if job["hero"]:
            job.update(
                upscale=dict(catalog.upscale),
                upscale_path=f"{folder}/hero-upscaled",
                clip={
                    "prompt": render_prompt(catalog.clip_prompt, day, **facts),
                    "duration": catalog.clip_duration,
                },
                clip_path=f"{folder}/clip",
            )
        jobs.append(job)
    return jobs
