"""Catalog entries: the dataclasses and the loader that turns one JSON file into a ModelEntry.

Each Segmind model the provider knows is one file, ``catalog/models/<slug>.json``. The loader is
strict (unknown keys, wrong types and dangling rule references are refused with the file named),
because a typo in the data would otherwise silently weaken the checks made before spending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Any

__all__ = ["ModelEntry", "Parameter", "load_entries", "load_entries_from", "parse_entry"]

#: The words an entry may use (types, output kinds, parameter keys, rules), shared with the emulator.
VOCABULARY: dict[str, Any] = json.loads(
    resources.files("segmind_provider.catalog")
    .joinpath("data")
    .joinpath("vocabulary.json")
    .read_text("utf-8")
)
TYPES: tuple[str, ...] = tuple(VOCABULARY["types"])
TASKS = (
    "text-to-image",
    "image-edit",
    "background-removal",
    "upscale",
    "face-swap",
    "image-to-video",
    "text-to-video",
    "video-to-video",
    "text-to-speech",
    "text-to-audio",
    "transcription",
    "image-to-3d",
    "text",
)
OUTPUT_KINDS: tuple[str, ...] = tuple(VOCABULARY["output_kinds"])
MEDIA: tuple[str, ...] = tuple(VOCABULARY["media"])
ENCODINGS: tuple[str, ...] = tuple(VOCABULARY["encodings"])

#: Cross-field rules, by kind: the keys each one takes (see docs/models.md for their meaning).
RULE_KEYS: dict[str, frozenset[str]] = {kind: frozenset(keys) for kind, keys in VOCABULARY["rules"].items()}

_ENTRY_KEYS = frozenset(
    {"slug", "title", "page", "task", "output", "typical_seconds", "price_usd", "parameters", "rules"}
)
_ENTRY_OPTIONAL = frozenset({"price_note", "description", "read", "page_file", "import_notes"})
_OUTPUT_KEYS = frozenset({"kind", "format_field", "default_format"})
_PARAM_KEYS = frozenset(VOCABULARY["parameter_keys"])


@dataclass(frozen=True)
class Parameter:
    """One request field of a model, as its page documents it."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    min_length: int | None = None
    max_length: int | None = None
    multiple_of: float | None = None
    round_to_multiple: bool = False
    media: str | None = None
    encoding: str | None = None
    max_items: int | None = None
    description: str = ""

    @property
    def nullable(self) -> bool:
        """null is accepted for an optional field whose default is none (the service's own default)."""
        return not self.required and self.default is None


@dataclass(frozen=True)
class ModelEntry:
    """Everything the provider knows about one Segmind model, read from its catalog file."""

    slug: str
    title: str
    page: str
    task: str
    output_kind: str
    output_format_field: str | None
    default_output_format: str | None
    typical_seconds: float
    price_usd: float
    price_note: str | None
    parameters: Mapping[str, Parameter] = field(hash=False)
    rules: tuple[Mapping[str, Any], ...] = field(hash=False)
    description: str = ""
    read: str | None = None
    """The date the page was read (entries made by the importer)."""
    import_notes: tuple[str, ...] = ()
    """What the importer could not read from the page, or how the entry differs from it."""

    def media_fields(self) -> dict[str, Parameter]:
        """The fields that take a file (image, video, audio), by name."""
        return {name: p for name, p in self.parameters.items() if p.media is not None}


class _Reader:
    """Collects every problem of one entry so a broken file is reported in one go."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def keys(self, where: str, data: Any, required: frozenset[str], optional: frozenset[str]) -> bool:
        if not isinstance(data, Mapping):
            self.fail(where, f"expected an object, got {type(data).__name__}")
            return False
        for key in sorted(required - data.keys()):
            self.fail(where, f"missing key {key!r}")
        for key in sorted(data.keys() - required - optional):
            self.fail(where, f"unknown key {key!r}")
        return True

    def typed(self, where: str, value: Any, kinds: tuple[type, ...], *, none: bool = False) -> None:
        if value is None and none:
            return
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds)
            self.fail(where, f"expected {names}{' or null' if none else ''}, got {value!r}")

    def choice(self, where: str, value: Any, allowed: tuple[str, ...], *, none: bool = False) -> None:
        if not (value is None and none) and value not in allowed:
            self.fail(where, f"{value!r} is not one of {', '.join(allowed)}")


def parse_entry(data: Mapping[str, Any], source: str = "<entry>") -> ModelEntry:
    """Build a ModelEntry from the decoded JSON of one catalog file; ValueError lists every problem."""
    r = _Reader(source)
    if not r.keys("entry", data, _ENTRY_KEYS, _ENTRY_OPTIONAL):
        raise ValueError(f"catalog entry {source}: " + "; ".join(r.problems))
    for key in ("slug", "title", "page", "task"):
        r.typed(key, data.get(key), (str,))
    r.choice("task", data.get("task"), TASKS)
    r.typed("typical_seconds", data.get("typical_seconds"), (int, float))
    r.typed("price_usd", data.get("price_usd"), (int, float))
    r.typed("price_note", data.get("price_note"), (str,), none=True)
    r.typed("description", data.get("description", ""), (str,))
    r.typed("read", data.get("read"), (str,), none=True)
    r.typed("page_file", data.get("page_file"), (str,), none=True)
    notes = data.get("import_notes", [])
    if not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        r.fail("import_notes", "expected a list of strings")
    output = data.get("output", {})
    if r.keys("output", output, _OUTPUT_KEYS, frozenset()):
        r.choice("output.kind", output.get("kind"), OUTPUT_KINDS)
        r.typed("output.format_field", output.get("format_field"), (str,), none=True)
        r.typed("output.default_format", output.get("default_format"), (str,), none=True)
    params: dict[str, Parameter] = {}
    raw_params = data.get("parameters", {})
    if isinstance(raw_params, Mapping):
        for name, spec in raw_params.items():
            param = _parse_parameter(r, str(name), spec)
            if param is not None:
                params[str(name)] = param
    else:
        r.fail("parameters", "expected an object")
    format_field = output.get("format_field") if isinstance(output, Mapping) else None
    if isinstance(format_field, str) and format_field not in params:
        r.fail("output.format_field", f"{format_field!r} is not a parameter")
    rules = data.get("rules", [])
    if isinstance(rules, list):
        for index, rule in enumerate(rules):
            _check_rule(r, f"rules[{index}]", rule, params)
    else:
        r.fail("rules", "expected a list")
    if r.problems:
        raise ValueError(f"catalog entry {source}: " + "; ".join(r.problems))
    return ModelEntry(
        slug=data["slug"],
        title=data["title"],
        page=data["page"],
        task=data["task"],
        output_kind=output["kind"],
        output_format_field=output["format_field"],
        default_output_format=output["default_format"],
        typical_seconds=float(data["typical_seconds"]),
        price_usd=float(data["price_usd"]),
        price_note=data.get("price_note"),
        parameters=MappingProxyType(params),
        rules=tuple(MappingProxyType(dict(rule)) for rule in rules),
        description=data.get("description", ""),
        read=data.get("read"),
        import_notes=tuple(data.get("import_notes", [])),
    )


def _parse_parameter(r: _Reader, name: str, spec: Any) -> Parameter | None:
    where = f"parameters.{name}"
    if not r.keys(where, spec, frozenset({"type"}), _PARAM_KEYS - {"type"}):
        return None
    kind = spec["type"]
    r.choice(f"{where}.type", kind, TYPES)
    r.typed(f"{where}.required", spec.get("required", False), (bool,))
    r.typed(f"{where}.round_to_multiple", spec.get("round_to_multiple", False), (bool,))
    r.typed(f"{where}.description", spec.get("description", ""), (str,))
    for key in ("minimum", "maximum", "multiple_of"):
        r.typed(f"{where}.{key}", spec.get(key), (int, float), none=True)
    for key in ("min_length", "max_length", "max_items"):
        r.typed(f"{where}.{key}", spec.get(key), (int,), none=True)
    r.choice(f"{where}.media", spec.get("media"), MEDIA, none=True)
    r.choice(f"{where}.encoding", spec.get("encoding"), ENCODINGS, none=True)
    if (spec.get("media") is None) != (spec.get("encoding") is None):
        r.fail(where, "media and encoding go together: a file field says how it takes the file")
    if spec.get("media") is not None and kind not in ("string", "array"):
        r.fail(where, "a media field is a string (one file) or an array (several)")
    if spec.get("round_to_multiple") and spec.get("multiple_of") is None:
        r.fail(where, "round_to_multiple needs multiple_of")
    if spec.get("max_items") is not None and kind != "array":
        r.fail(where, "max_items is for arrays")
    enum = spec.get("enum")
    if enum is not None and not (isinstance(enum, list) and enum):
        r.fail(f"{where}.enum", "expected a non-empty list")
        enum = None
    return Parameter(
        name=name,
        type=kind,
        required=spec.get("required", False),
        default=spec.get("default"),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
        enum=tuple(enum) if enum is not None else None,
        min_length=spec.get("min_length"),
        max_length=spec.get("max_length"),
        multiple_of=spec.get("multiple_of"),
        round_to_multiple=spec.get("round_to_multiple", False),
        media=spec.get("media"),
        encoding=spec.get("encoding"),
        max_items=spec.get("max_items"),
        description=spec.get("description", ""),
    )


def _check_rule(r: _Reader, where: str, rule: Any, params: Mapping[str, Parameter]) -> None:
    kind = rule.get("kind") if isinstance(rule, Mapping) else None
    if kind not in RULE_KEYS:
        r.fail(where, f"unknown rule kind {kind!r}; known: {', '.join(RULE_KEYS)}")
        return
    if not r.keys(where, rule, RULE_KEYS[kind], frozenset()):
        return
    names = [rule["field"], *rule.get("fields", []), *rule.get("present", [])]
    for name in names:
        if name not in params:
            r.fail(where, f"{name!r} is not a parameter")


def load_entries() -> dict[str, ModelEntry]:
    """Read every ``models/*.json`` shipped with the package, by slug (file name = slug)."""
    return load_entries_from(resources.files("segmind_provider.catalog").joinpath("models"))


def load_entries_from(folder: Traversable) -> dict[str, ModelEntry]:
    """Read every ``*.json`` entry of ``folder`` (the package's, or a user catalog's ``models/``)."""
    entries: dict[str, ModelEntry] = {}
    if not folder.is_dir():
        return entries
    for item in sorted(folder.iterdir(), key=lambda f: f.name):
        if not item.name.endswith(".json"):
            continue
        data = json.loads(item.read_text(encoding="utf-8"))
        entry = parse_entry(data, item.name)
        if f"{entry.slug}.json" != item.name:
            raise ValueError(f"catalog entry {item.name}: slug {entry.slug!r} does not match the file name")
        entries[entry.slug] = entry
    return entries
