"""The models the emulator serves, read from the catalog's data files (the API contract as data).

The emulator reads `segmind_provider/catalog/models/*.json`, the model directory
(`catalog/data/directory.txt`) and the entries' vocabulary (`catalog/data/vocabulary.json`: types,
output kinds, parameter keys, rules) directly and never imports the client's catalog code: it writes
its own checks from the same data, so a mistake in the client's validation is caught here instead
of being repeated. Every directory model is served, unvalidated, by its output kind at its
average latency (an unknown average: the kind's typical time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CATALOG_DIR = Path(__file__).resolve().parents[2] / "catalog" / "models"
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "catalog" / "data" / "directory.txt"
#: The words a catalog entry may use, the same file the client's catalog reads (data, not its code).
VOCABULARY_FILE = Path(__file__).resolve().parents[2] / "catalog" / "data" / "vocabulary.json"
VOCABULARY: dict[str, Any] = json.loads(VOCABULARY_FILE.read_text(encoding="utf-8"))
OUTPUT_KINDS: tuple[str, ...] = tuple(VOCABULARY["output_kinds"])
PARAMETER_KEYS = frozenset(VOCABULARY["parameter_keys"])
TYPES: tuple[str, ...] = tuple(VOCABULARY["types"])
#: The cross-field rules an entry may use (validation.RULES checks each one).
RULE_KINDS: tuple[str, ...] = tuple(VOCABULARY["rules"])
#: Simulated seconds for a directory model whose average latency the directory does not give.
KIND_LATENCY = {"image": 15.0, "video": 120.0, "audio": 20.0, "3d": 60.0, "text": 5.0, "json": 5.0}


@dataclass
class ModelSpec:
    """A model the emulator serves: its timing, price, output and (for catalog models) its parameters.

    `parameters` is the catalog entry's parameter data as written in the JSON file; a model
    registered at run time without it gets lenient checks (prompt, size, format).
    """

    name: str
    latency: float
    jitter: float = 0.15
    output: str = "image"
    cost: float | None = None
    # A model idle for `cold_after` simulated seconds needs `cold_start` more before its next job
    # runs (it stays QUEUED while it "loads"), like Segmind's cold models.
    cold_start: float = 0.0
    cold_after: float = 600.0
    task: str | None = None
    parameters: dict[str, dict[str, Any]] | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    format_field: str | None = None
    default_format: str | None = None
    # Directory models: served without parameter checks (Segmind's page was not read for them).
    title: str = ""
    category: str = ""
    directory: bool = False
    # A retired model answers 410 Gone (not billed), naming `successor` when there is one.
    retired: bool = False
    successor: str | None = None
    # An LLM answers in its vendor's chat JSON: "openai" or "anthropic" (see `chat_vendor`).
    chat: str | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output: must be one of {', '.join(OUTPUT_KINDS)}")
        if self.latency < 0 or not 0 <= self.jitter < 1:
            raise ValueError("latency must be >= 0 and jitter in [0, 1)")
        if self.cold_start < 0 or self.cold_after < 0:
            raise ValueError("cold_start and cold_after must be >= 0")

    def media_fields(self) -> dict[str, dict[str, Any]]:
        """The parameters that take a file (an image, a video, audio)."""
        return {name: p for name, p in (self.parameters or {}).items() if p.get("media")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latency": self.latency,
            "jitter": self.jitter,
            "output": self.output,
            "cost": self.cost,
            "cold_start": self.cold_start,
            "cold_after": self.cold_after,
            "task": self.task,
            "catalog": self.parameters is not None,
            "directory": self.directory,
            "retired": self.retired,
            "successor": self.successor,
            "chat": self.chat,
        }

    def list_entry(self) -> dict[str, Any]:
        """The model as the account API's model list shows it."""
        return {
            "slug": self.name,
            "title": self.title or self.name,
            "type": self.category or self.task or "",
            "output_kind": self.output,
            "average_cost_usd": self.cost,
            "average_latency_s": self.latency,
            "status": "retired" if self.retired else "active",
            "successor": self.successor,
        }


def spec_from_entry(entry: dict[str, Any], source: str = "<entry>") -> ModelSpec:
    """A `ModelSpec` from one catalog entry; a malformed entry is an error naming the file and key."""
    try:
        output = entry["output"]
        parameters = entry["parameters"]
        if not isinstance(parameters, dict):
            raise ValueError("parameters: must be an object")
        for name, param in parameters.items():
            _check_parameter(name, param)
        rules = list(entry.get("rules") or [])
        spec = ModelSpec(
            name=str(entry["slug"]),
            latency=float(entry["typical_seconds"]),
            output=str(output["kind"]),
            cost=None if entry.get("price_usd") is None else float(entry["price_usd"]),
            task=str(entry["task"]),
            parameters=parameters,
            rules=rules,
            format_field=output.get("format_field"),
            default_format=output.get("default_format"),
        )
        if spec.output == "text" and "messages" in parameters:
            notes = " ".join(str(note) for note in entry.get("import_notes") or ())
            spec.chat = chat_vendor(spec.name, notes)
        _check_rules(spec.rules)
        return spec
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"catalog entry {source}: {exc}") from exc


def chat_vendor(slug: str, page_notes: str = "") -> str:
    """The chat JSON an LLM answers in: Anthropic's for a page in its format or a Claude model,
    else OpenAI's (the format of Segmind's other LLM pages, Gemini's included in the emulator)."""
    return "anthropic" if "Anthropic Claude" in page_notes or slug.startswith("claude") else "openai"


def _check_rules(rules: list[Any]) -> None:
    """Refuse an entry whose rule the emulator cannot check: a skipped rule would hide a mismatch."""
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("kind") not in RULE_KINDS:
            kind = rule.get("kind") if isinstance(rule, dict) else rule
            raise ValueError(f"rules: unknown kind {kind!r} (known: {', '.join(sorted(RULE_KINDS))})")


def _check_parameter(name: str, param: Any) -> None:
    if not isinstance(param, dict):
        raise ValueError(f"parameters.{name}: must be an object")
    unknown = set(param) - PARAMETER_KEYS
    if unknown:
        # A key the emulator does not understand would be a check silently skipped.
        raise ValueError(f"parameters.{name}: unknown key(s) {', '.join(sorted(unknown))}")
    if param.get("type") not in TYPES:
        raise ValueError(f"parameters.{name}.type: must be one of {', '.join(TYPES)}")


def load_catalog(directory: str | Path | None = None) -> dict[str, ModelSpec]:
    """Every `*.json` entry in the catalog directory, by slug (empty if the directory is missing)."""
    path = Path(directory) if directory else DEFAULT_CATALOG_DIR
    if directory and not path.is_dir():
        raise ValueError(f"catalog_dir: {path} is not a directory")
    specs: dict[str, ModelSpec] = {}
    for file in sorted(path.glob("*.json")) if path.is_dir() else ():
        spec = spec_from_entry(json.loads(file.read_text(encoding="utf-8")), file.name)
        specs[spec.name] = spec
    return specs


def load_directory(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """Every model of the directory file (`slug|title|price|latency[|kind=..][|successor=..]` lines
    under `## Category|kind` headers), as an unvalidated spec; empty if the file is missing."""
    file = Path(path) if path else DEFAULT_DIRECTORY
    specs: dict[str, ModelSpec] = {}
    category, kind = "", "image"
    for line in file.read_text(encoding="utf-8").splitlines() if file.is_file() else ():
        if line.startswith("## "):
            category, _, kind = line[3:].partition("|")
        elif line.strip() and not line.startswith("#"):
            slug, title, price, latency, *extras = line.split("|")
            options = dict(extra.split("=", 1) for extra in extras)
            output = options.get("kind", kind).split(" ")[0]
            specs[slug] = ModelSpec(
                name=slug,
                latency=KIND_LATENCY[output] if latency == "-" else float(latency),
                output=output,
                cost=None if price == "-" else float(price),
                title=title,
                category=category,
                directory=True,
                successor=options.get("successor"),
                chat=chat_vendor(slug) if "(LLM)" in category else None,
            )
    return specs


def default_models(catalog_dir: str | Path | None = None) -> dict[str, ModelSpec]:
    """The directory's models, overridden by the catalog's full entries; `flux-1.1-pro` with
    lenient checks if no catalog is installed."""
    models = load_directory()
    for name, spec in load_catalog(catalog_dir).items():
        listed = models.get(name)
        if listed is not None:
            spec.title, spec.category, spec.successor = listed.title, listed.category, listed.successor
        models[name] = spec
    models.setdefault("flux-1.1-pro", ModelSpec("flux-1.1-pro", latency=14.05, jitter=0.15))
    return models
