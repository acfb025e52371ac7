"""The campaign catalog: products, prompt templates and how a run's date fills them in."""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent.parent / "data" / "campaign_catalog.json"

#: Placeholders a prompt template may use; anything else is a catalog error caught before any request.
TEMPLATE_FIELDS = ("date", "year", "month", "weekday", "season", "name", "brand")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ASPECT_RATIOS = frozenset({"1:1", "16:9", "2:3", "3:2", "4:5", "5:4", "9:16", "3:4", "4:3"})


class CatalogError(ValueError):
    """The catalog file is malformed: raised at plan time, before any paid request is made."""


@dataclass(frozen=True)
class Product:
    """One catalog entry: what to generate and how to caption it."""

    id: str
    name: str
    tagline: str
    prompt_template: str
    aspect_ratio: str
    seed: int


@dataclass(frozen=True)
class Catalog:
    """A campaign: a brand, the model, payload defaults shared by all products, and the products."""

    campaign: str
    brand: str
    model: str
    products: tuple[Product, ...]
    defaults: dict[str, Any] = field(default_factory=dict)


def season_of(day: dt.date) -> str:
    """Northern-hemisphere meteorological season, the word marketing prompts actually use."""
    return {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring"}.get(
        day.month, "summer" if day.month in (6, 7, 8) else "autumn"
    )


def render_prompt(template: str, day: dt.date, *, name: str = "", brand: str = "") -> str:
    """Fill a prompt template with the run's date; unknown placeholders raise ``CatalogError``."""
    values = {
        "date": day.isoformat(),
        "year": str(day.year),
        "month": day.strftime("%B"),
        "weekday": day.strftime("%A"),
        "season": season_of(day),
        "name": name,
        "brand": brand,
    }
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None and field_name not in values:
            raise CatalogError(f"unknown placeholder {{{field_name}}} in prompt template {template!r}")
    return template.format(**values)


def load_catalog(path: str | Path = DEFAULT_CATALOG_PATH) -> Catalog:
    """Read and check the catalog so a typo fails the plan task, not twelve generation tasks."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    try:
        products = tuple(
            Product(
                id=str(p["id"]),
                name=str(p["name"]),
                tagline=str(p.get("tagline", "")),
                prompt_template=str(p["prompt_template"]),
                aspect_ratio=str(p.get("aspect_ratio", "1:1")),
                seed=int(p["seed"]),
            )
            for p in raw["products"]
        )
        catalog = Catalog(
            campaign=str(raw.get("campaign", "")),
            brand=str(raw.get("brand", "")),
            model=str(raw.get("model", "flux-1.1-pro")),
            products=products,
            defaults=dict(raw.get("defaults", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"malformed catalog {path}: {exc!r}") from exc
    _check(catalog)
    return catalog


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
        if product.aspect_ratio not in _ASPECT_RATIOS:
            raise CatalogError(f"product {product.id!r}: unsupported aspect ratio {product.aspect_ratio!r}")
        render_prompt(product.prompt_template, dt.date(2000, 1, 1))


def build_jobs(catalog: Catalog, day: dt.date, raw_dir: str) -> list[dict[str, Any]]:
    """One dict per product: what the generation task needs (``payload``, ``output_path``) and the
    product facts the post-processing and the manifest need, in catalog order (= map index)."""
    jobs = []
    for product in catalog.products:
        prompt = render_prompt(product.prompt_template, day, name=product.name, brand=catalog.brand)
        payload = {
            **catalog.defaults,
            "prompt": prompt,
            "aspect_ratio": product.aspect_ratio,
            "seed": product.seed,
        }
        extension = str(payload.get("output_format", "webp"))
        jobs.append(
            {
                "product_id": product.id,
                "name": product.name,
                "tagline": product.tagline,
                "brand": catalog.brand,
                "model": catalog.model,
                "prompt": prompt,
                "seed": product.seed,
                "aspect_ratio": product.aspect_ratio,
                "payload": payload,
                "output_path": f"{raw_dir.rstrip('/')}/{product.id}.{extension}",
            }
        )
    return jobs
