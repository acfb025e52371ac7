"""Segmind's whole model directory as data: every model's slug, title, category, output kind,
average price and latency, so a model without a full catalog entry is still *known*.

The shipped copy is ``catalog/data/directory.txt`` (read from https://www.segmind.com/llms.txt);
``python -m segmind_provider.catalog refresh`` writes a newer one into the user catalog folder
(``directory.json``), whose records win over the shipped ones. Parsed on first use only: a
triggerer that imports the provider and never asks about a model pays nothing for it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from segmind_provider.catalog.entry import OUTPUT_KINDS

__all__ = [
    "KINDS",
    "DirectoryModel",
    "category_kinds",
    "kind_for_category",
    "load_user_directory",
    "nearest",
    "parse_directory",
    "records_from_list",
    "shipped_directory",
]

#: Output kinds: what a model's result is, which decides how it is stored.
KINDS = OUTPUT_KINDS

#: For a category the directory does not use yet (a live list may bring new ones): the first word that matches.
_CATEGORY_WORDS = (
    ("3d", "3d"),
    ("embed", "json"),
    ("tovideo", "video"),
    ("videoto", "video"),
    ("toaudio", "audio"),
    ("speech", "audio"),
    ("tts", "audio"),
    ("totext", "text"),
    ("llm", "text"),
    ("textgeneration", "text"),
    ("chat", "text"),
    ("image", "image"),
)

SHIPPED_FILE = "directory.txt"
USER_FILE = "directory.json"


@dataclass(frozen=True, slots=True)
class DirectoryModel:
    """One model of Segmind's directory: enough to price it, wait for it and store its output."""

    slug: str
    title: str
    category: str
    output_kind: str
    price_usd: float | None
    latency_s: float | None
    read: str
    successor: str | None = None
    kind_note: str | None = None
    retired: bool = False
    source: str = "shipped"

    def to_json(self) -> dict[str, Any]:
        """The record as the user catalog's ``directory.json`` stores it."""
        data: dict[str, Any] = {
            "slug": self.slug,
            "title": self.title,
            "category": self.category,
            "output_kind": self.output_kind,
            "price_usd": self.price_usd,
            "latency_s": self.latency_s,
            "read": self.read,
        }
        if self.successor:
            data["successor"] = self.successor
        if self.kind_note:
            data["kind_note"] = self.kind_note
        if self.retired:
            data["retired"] = True
        return data


def kind_for_category(category: str, known: Mapping[str, str] | None = None) -> str:
    """The output kind a category implies: the shipped directory's (``known``), else its words, else JSON."""
    if known and category in known:
        return known[category]
    squashed = "".join(ch for ch in category.lower() if ch.isalnum())
    return next((kind for word, kind in _CATEGORY_WORDS if word in squashed), "json")


def _number(text: str, where: str) -> float | None:
    text = text.strip()
    if text in ("", "-"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number or '-'") from None
    if value < 0:
        raise ValueError(f"{where}: {text!r} is negative")
    return value


def parse_directory(text: str, source: str = SHIPPED_FILE) -> dict[str, DirectoryModel]:
    """The records of a directory file (the shipped format: see its header), by slug."""
    records: dict[str, DirectoryModel] = {}
    category = category_kind = read = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source} line {number}"
        if line.startswith("## "):
            category, _, category_kind = (part.strip() for part in line[3:].partition("|"))
        elif line.startswith("# read:"):
            read = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            slug, title, price, latency, *extras = line.split("|")
            if not category:
                raise ValueError(f"{where}: a model before any '## Category' line")
            options = dict(extra.split("=", 1) for extra in extras)
            kind, _, note = options.pop("kind", "").partition(" ")
            successor = options.pop("successor", None)
            if options:
                raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(options))}")
            kind = kind or category_kind
            if kind not in KINDS:
                raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
            if slug in records:
                raise ValueError(f"{where}: {slug!r} is listed twice")
            records[slug] = DirectoryModel(
                slug=slug,
                title=title,
                category=category,
                output_kind=kind,
                price_usd=_number(price, f"{where} price"),
                latency_s=_number(latency, f"{where} latency"),
                read=read,
                successor=successor,
                kind_note=note.strip("() ") or None,
            )
    return records


def shipped_directory() -> dict[str, DirectoryModel]:
    """The directory shipped in the package."""
    text = (
        resources.files("segmind_provider.catalog").joinpath("data").joinpath(SHIPPED_FILE).read_text("utf-8")
    )
    return parse_directory(text)


def _first(item: Mapping[str, Any], names: Iterable[str]) -> Any:
    return next((item[name] for name in names if item.get(name) not in (None, "")), None)


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        text = value.strip().lstrip("$").rstrip("s").strip()
        try:
            return _float(float(text))
        except ValueError:
            return None
    return None


def category_kinds(records: Iterable[DirectoryModel]) -> dict[str, str]:
    """Each category's output kind as the records' section lines give it (the first record's kind)."""
    kinds: dict[str, str] = {}
    for record in records:
        if record.kind_note is None:
            kinds.setdefault(record.category, record.output_kind)
    return kinds


def records_from_list(
    answer: Any, read: str, source: str, known: Mapping[str, str] | None = None
) -> dict[str, DirectoryModel]:
    """Directory records from Segmind's live model list, read tolerantly (its shape is undocumented).

    Takes a list of models, or one under ``data``/``models``/``items``; each model needs a slug
    (``slug``, ``model_slug`` or ``name``); title, category (``category``/``type``), output kind,
    price and latency are taken where present; a kind not given comes from the category (``known``:
    the shipped directory's categories). Models without a slug are skipped.
    """
    items = answer
    if isinstance(answer, Mapping):
        items = _first(answer, ("data", "models", "items")) or []
    records: dict[str, DirectoryModel] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        slug = _first(item, ("slug", "model_slug", "name"))
        if not isinstance(slug, str) or not slug.strip():
            continue
        category = str(_first(item, ("category", "type", "modality")) or "")
        kind = _first(item, ("output_kind", "output"))
        kind = kind if kind in KINDS else kind_for_category(category, known)
        status = str(item.get("status") or "").lower()
        records[slug] = DirectoryModel(
            slug=slug.strip(),
            title=str(_first(item, ("title", "display_name", "name")) or slug),
            category=category,
            output_kind=kind,
            price_usd=_float(_first(item, ("price_usd", "average_cost_usd", "avg_cost", "cost", "price"))),
            latency_s=_float(_first(item, ("latency_s", "average_latency_s", "avg_latency", "latency"))),
            read=read,
            successor=_first(item, ("successor",)),
            retired=bool(item.get("retired")) or status in ("retired", "deprecated", "gone"),
            source=source,
        )
    return records


def load_user_directory(folder: Path, known: Mapping[str, str] | None = None) -> dict[str, DirectoryModel]:
    """The records of a user catalog folder's ``directory.json`` (written by ``refresh``), if any."""
    path = folder / USER_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    read = str(data.get("read") or "") if isinstance(data, Mapping) else ""
    return records_from_list(data, read, f"user:{path}", known)


def nearest(slug: str, known: Iterable[str], count: int = 3) -> list[str]:
    """The known slugs closest to ``slug`` (a typo's likely meaning), best first."""
    return difflib.get_close_matches(slug, list(known), n=count, cutoff=0.6)
