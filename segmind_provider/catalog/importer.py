"""``python -m segmind_provider.catalog import PAGE_FILE``: a Segmind model page to a full catalog entry.

The page is ``segmind.com/models/<slug>/api`` saved as text, as HTML, or the model's ``llms.txt``
(the format of ``/work/shared/seeds/``: a title, the typical time, the endpoint, then a
``Parameters`` section of ``<name>required|optional`` blocks with the type, a description,
``Default:``, ``Range:`` and ``Allowed values``, closed by ``Response Type``). An LLM page has a
chat layout: ``messages`` typed ``object[]`` followed by ``Array items:`` (the fields of each message,
named in the list's description: ``role``, ``content``), its own fields, then ``Response Format``. What the page does not say (the task, a price
the page omits, the output kind) comes from the model directory and is noted; what the importer
cannot read (an enum the page cuts with "+3 more", a type it does not know) is reported in the
entry's ``import_notes`` and on stderr, and left out rather than guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from segmind_provider.catalog.directory import DirectoryModel

__all__ = ["CONTRACT_KEYS", "ImportedPage", "diff_entries", "import_page", "page_text"]

#: What an entry promises the service accepts; titles and descriptions are documentation.
CONTRACT_KEYS = ("slug", "task", "output", "typical_seconds", "price_usd")

_PARAM_START = re.compile(r"^([A-Za-z_][\w.\-]*?)(required|optional)$")
_SLUG_PATTERNS = (
    re.compile(r"POST\s*/v2/([\w.\-]+)"),
    re.compile(r"POST\s*https?://api\.segmind\.com/v[12]/(?:models/)?([\w.\-]+)"),  # older: /v1/models/<slug>
    re.compile(r"url\s*=\s*[\"']https?://api\.segmind\.com/v1/([\w.\-]+)[\"']"),  # the older layout's sample
)
_SECONDS = re.compile(r"^~\s*([\d.]+)\s*s$")
_PRICE = re.compile(r"^~?\s*\$\s*([\d.]+)(?:\s*-\s*\$\s*([\d.]+))?")
_RANGE = re.compile(r"Range:\s*(-?[\d.]+)\s*(?:-|to)\s*(-?[\d.]+)")
_MULTIPLE = re.compile(r"multiple of (\d+)", re.IGNORECASE)
_ONLY_WHEN = re.compile(r"Only used when (\w+)\s*=\s*([\w:.\-]+)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_MORE = re.compile(r"\+(\d+) more")
_TYPES = {
    "string": "string",
    "str": "string",
    "integer": "integer",
    "int": "integer",
    "number": "number",
    "float": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "string[]": "array",
    "object[]": "array",
}
#: The Python types of each parameter type's values (a default of another type is not taken).
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
}
#: The lines that close the parameter list: media pages, and LLM pages (a JSON sample follows).
_PARAMS_END = ("Response Type", "Response Format")
_ITEMS = "Array items:"
#: The older page layout: ``Attributes``, then ``<name><type>[ *][ ( default: X )][ Affects Pricing]``
#: headers with ``min : N,`` / ``max : M`` lines, up to the note on credit usage.
_ATTRIBUTES = "Attributes"
_ATTRIBUTES_END = "To keep track of your credit usage"
_OLD_FIELD = re.compile(
    r"^([a-z_][\w.\-]*?)(enum:str|str|int|float|boolean|bool|Array|image)(\s*\*)?"
    r"(?:\s*\(\s*default:\s*(.*?)\s*\))?(\s+Affects Pricing)?$"
)
_OLD_TYPES = {
    "str": "string",
    "enum:str": "string",
    "int": "integer",
    "float": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "Array": "array",
    "image": "string",
}
_OLD_BOUND = re.compile(r"^(min|max)\s*:\s*(-?[\d.]+),?$")
#: The older layout's code sample: ``const data = {...};`` (its values show a field's real type).
_OLD_SAMPLE = "const data = "
_API_FORMAT = re.compile(r"^API Format:\s*(.+)$")
#: The fields that name the output's file format, in the order they are looked for.
FORMAT_FIELDS = ("output_format", "format", "image_format")
#: What a page's "Returns:" line says, as an output kind ("Text/JSON" is said of images too: not used).
_RETURNS = {"image": "image", "video": "video", "audio": "audio"}
#: The directory's output kind and title words to the entry's task.
_TASK_WORDS = (
    ("background", "background-removal"),
    ("bg-removal", "background-removal"),
    ("upscal", "upscale"),
    ("faceswap", "face-swap"),
    ("face swap", "face-swap"),
    ("face-swap", "face-swap"),
    ("transcri", "transcription"),
    ("speech", "text-to-speech"),
    ("tts", "text-to-speech"),
)
_KIND_TASKS = {"video": "image-to-video", "audio": "text-to-audio", "3d": "image-to-3d", "text": "text"}
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre", "section", "span"})


@dataclass
class ImportedPage:
    """The entry (catalog JSON), what could not be read from the page, and whether it is usable."""

    entry: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    complete: bool = True
    """False when the parameter list may be cut or a contract field is missing: never written."""


class _Text(HTMLParser):
    """Visible text of an HTML page, a line per block element (scripts and styles dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(self._skip - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(raw: str) -> str:
    """The page as lines of text: HTML is reduced to its visible text, text is kept."""
    head = raw.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<body", "<div")):
        parser = _Text()
        parser.feed(raw)
        raw = "".join(parser.parts)
    return "\n".join(line.strip() for line in raw.splitlines())


def _value(text: str, kind: str) -> Any:
    """A default or allowed value as the page writes it, typed as the parameter is."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if kind == "integer" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "number" and isinstance(value, str) and re.fullmatch(r"-?[\d.]+", value):
        return float(value)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _fits(value: Any, kind: str) -> bool:
    """Whether a page's default is a value of the parameter's type (null always is; true is no number)."""
    if value is None:
        return True
    return isinstance(value, _PY_TYPES[kind]) and (kind == "boolean" or not isinstance(value, bool))


def _media(name: str) -> str:
    lowered = name.lower()
    if "video" in lowered:
        return "video"
    if "audio" in lowered or "voice" in lowered or "speech" in lowered:
        return "audio"
    return "image"


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _parameter(name: str, lines: list[str], problems: list[str]) -> dict[str, Any] | None:
    """One ``<name>required|optional`` block, without its first line."""
    body = [line for line in lines if line]
    if not body:
        problems.append(f"parameters.{name}: no type on the page; left out")
        return None
    type_text = body[0].lower()
    base, _, qualifier = type_text.partition("(")
    kind = _TYPES.get(base.strip().split(" ")[0])
    if kind is None:
        problems.append(
            f"parameters.{name}: unknown type {body[0]!r}; not imported (an entry refuses a field it does "
            f"not list, and fields nested in an object cannot be placed)"
        )
        return None
    spec: dict[str, Any] = {"type": kind}
    description: list[str] = []
    rest = body[1:]
    if "|" in type_text or "Exactly one of:" in rest:
        # "string | string" with "Option 1: string (uri) / Option 2: string": a URL or inline data.
        problems.append(
            f"parameters.{name}: one of several types ({body[0]!r}); taken as a {kind} without file "
            f"handling (input_files cannot fill it: pass a URL or the data yourself)"
        )
        cut = rest.index("Exactly one of:") if "Exactly one of:" in rest else len(rest)
        rest = rest[:cut]
    index = 0
    while index < len(rest):
        line = rest[index]
        if line.startswith("Default:"):
            default_text = line[len("Default:") :].split("Range:")[0].strip()
            default = _value(default_text, kind)
            if _fits(default, kind):
                spec["default"] = default
            else:
                problems.append(f"parameters.{name}: default {default_text!r} is not a {kind}; left out")
            if "Range:" in line:
                match = _RANGE.search(line)
                if match is None:
                    problems.append(
                        f"parameters.{name}: range {line.split('Range:')[1].strip()!r} unreadable"
                    )
                else:
                    spec["minimum"], spec["maximum"] = _number(match[1]), _number(match[2])
        elif line.startswith("Range:"):
            match = _RANGE.search(line)
            if match is None:
                problems.append(f"parameters.{name}: range {line!r} unreadable")
            else:
                spec["minimum"], spec["maximum"] = _number(match[1]), _number(match[2])
        elif line.startswith("Allowed values"):
            values_line = rest[index + 1] if index + 1 < len(rest) else ""
            index += 1
            more = _MORE.search(values_line)
            if more is not None:
                problems.append(
                    f"parameters.{name}: the page shows only part of its allowed values "
                    f"({line.strip()} ... +{more[1]} more); no enum set"
                )
            elif not _QUOTED.findall(values_line):
                problems.append(
                    f"parameters.{name}: allowed values {values_line!r} unreadable (not quoted); no enum set"
                )
            else:
                spec["enum"] = [_value(json.dumps(v), kind) for v in _QUOTED.findall(values_line)]
        else:
            description.append(line)
        index += 1
    text = " ".join(description).strip()
    if text and text != "An enumeration.":
        spec["description"] = text
    if "uri" in qualifier or "url" in qualifier:
        spec["media"], spec["encoding"] = _media(name), "url"
    elif "base64" in qualifier:
        spec["media"], spec["encoding"] = _media(name), "base64"
    elif kind == "string" and "base64" in text.lower():
        spec["media"], spec["encoding"] = _media(name), "base64"
        problems.append(f"parameters.{name}: taken as a base64 {spec['media']} from its description")
    elif base.strip() == "string[]" and re.search(r"\burls?\b", text.lower()):
        spec["media"], spec["encoding"] = _media(name), "url"
        problems.append(f"parameters.{name}: taken as a list of {spec['media']} URLs from its description")
    multiple = _MULTIPLE.search(text)
    if multiple and kind in ("integer", "number"):
        spec["multiple_of"] = int(multiple[1])
        if "rounded" in text.lower():
            spec["round_to_multiple"] = True
    return spec


def _sections(lines: list[str]) -> tuple[list[str], list[str], bool]:
    """The lines before ``Parameters``, the parameter lines, and whether ``Response Type`` (or an LLM
    page's ``Response Format``) closes them."""
    try:
        start = lines.index("Parameters")
    except ValueError:
        return lines, [], False
    end = next((i for i in range(start + 1, len(lines)) if lines[i] in _PARAMS_END), None)
    return lines[:start], lines[start + 1 : end], end is not None


def _attribute_blocks(lines: list[str], problems: list[str]) -> tuple[list[tuple[str, bool, list[str]]], int]:
    """The older layout's fields, each rewritten in the newer layout's words (a type line, ``Default:``,
    ``Range:``) so one reader parses both; and the index of the line that closes the list (-1: none)."""
    start = lines.index(_ATTRIBUTES)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(_ATTRIBUTES_END)), -1)
    raw: list[tuple[str, str, bool, str | None, list[str]]] = []
    priced: list[str] = []
    for line in lines[start + 1 : end if end >= 0 else len(lines)]:
        match = _OLD_FIELD.match(line)
        if match:
            raw.append((match[1], match[2], bool(match[3]), match[4], []))
            priced += [match[1]] if match[5] else []
        elif raw and line:
            raw[-1][4].append(line)
    if priced:
        problems.append(
            f"price_usd: the page marks {', '.join(priced)} as 'Affects Pricing' but not how they affect the "
            "price; the entry's one price holds for every payload"
        )
    sample = _old_sample(lines)
    blocks: list[tuple[str, bool, list[str]]] = []
    for name, word, required, default, body in raw:
        bounds = {m[1]: m[2] for m in map(_OLD_BOUND.match, body) if m}
        text = [line for line in body if not _OLD_BOUND.match(line) and line != "Allowed values:"]
        kind = _OLD_TYPES[word]
        fractions = [str(v) for v in (*bounds.values(), sample.get(name)) if _fractional(v)]
        if kind == "integer" and fractions:
            kind = "number"
            problems.append(
                f"parameters.{name}: the page types it 'int' but gives {', '.join(fractions)} (its bounds or its "
                "code sample): taken as a number"
            )
        url = kind == "string" and (word == "image" or re.search(r"\burls?\b", " ".join(text).lower()))
        block = [kind + (" (uri)" if url else ""), *text]
        if url:
            problems.append(
                f"parameters.{name}: taken as a file URL from its {word!r} type or its description"
            )
        if "Allowed values:" in body:
            problems.append(
                f"parameters.{name}: the page lists no allowed values under 'Allowed values:'; no enum set"
            )
        if default is not None:
            block.append(f"Default: {default}")
        if len(bounds) == 2:
            block.append(f"Range: {bounds['min']} - {bounds['max']}")
        elif bounds:
            problems.append(f"parameters.{name}: only a {next(iter(bounds))} bound on the page; no range set")
        if kind == "array":
            block.append(_ITEMS)  # the fields its description names follow it: they are its items'
        blocks.append((name, required, block))
    return blocks, end


def _old_sample(lines: list[str]) -> dict[str, Any]:
    """The values the older layout's code sample sends (``const data = {...}``), or {} when it has none."""
    for line in lines:
        at = line.find(_OLD_SAMPLE)
        if at >= 0:
            try:
                value = json.JSONDecoder().raw_decode(line, at + len(_OLD_SAMPLE))[0]
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def _fractional(value: Any) -> bool:
    """A number with a fraction (``0.5``, ``"0.3"``): no integer field takes it."""
    try:
        return not isinstance(value, bool) and value is not None and not float(value).is_integer()
    except (TypeError, ValueError):
        return False


def _item_text(name: str, required: bool, lines: list[str], problems: list[str]) -> str:
    """One field of a list's items, in words (the entry describes items; it does not check them)."""
    spec = _parameter(name, lines, problems) or {"type": "unknown"}
    words = [("required " if required else "") + spec["type"]]
    if "enum" in spec:
        words.append("one of " + ", ".join(repr(v) for v in spec["enum"]))
    text = f"{name} ({'; '.join(words)})"
    return f"{text}: {spec['description'].rstrip('.')}" if spec.get("description") else text


def _fold_items(
    blocks: list[tuple[str, bool, list[str]]], problems: list[str]
) -> list[tuple[str, bool, list[str]]]:
    """Fold an LLM page's ``Array items:`` fields into their list's description.

    The fields that follow the marker and that the list's own description names (``Array of message
    objects with role and content``) are its items' fields; the first one it does not name is the
    page's next field (Claude's ``instruction``)."""
    folded: list[tuple[str, bool, list[str]]] = []
    index = 0
    while index < len(blocks):
        name, required, lines = blocks[index]
        index += 1
        if _ITEMS not in lines:
            folded.append((name, required, lines))
            continue
        own = lines[: lines.index(_ITEMS)]
        named = set(re.findall(r"\w+", " ".join(own[1:]).lower()))
        items: list[str] = []
        while index < len(blocks) and blocks[index][0].lower() in named:
            items.append(_item_text(*blocks[index], problems))
            index += 1
        if items:
            own = [line for line in own if line]
            if own[1:] and not own[-1].endswith("."):
                own[-1] += "."
            own.append("Each item: " + "; ".join(items) + ".")
            problems.append(
                f"parameters.{name}: a list of objects ({', '.join(i.split(' ')[0] for i in items)}); "
                f"the entry checks it is a list, its items are described, not checked"
            )
        folded.append((name, required, own))
    return folded


def _task_word(text: str) -> str | None:
    lowered = text.lower()
    return next((task for word, task in _TASK_WORDS if word in lowered), None)


def _task(slug: str, title: str, description: str, kind: str, record: DirectoryModel | None) -> str | None:
    """The entry's task: from the slug and title, else the directory's category (an image-to-image
    model's description may say what it does: "an upscaler")."""
    found = _task_word(f"{slug} {title}")
    if found is not None:
        return found
    category = (record.category if record else "").lower()
    if kind == "image":
        if "text-to-image" in category:
            return "text-to-image"
        return (_task_word(description) or "image-edit") if record is not None else None
    if kind == "video":
        if "text-to-video" in category:
            return "text-to-video"
        return "video-to-video" if "videotovideo" in category.replace("-", "") else _KIND_TASKS["video"]
    return _KIND_TASKS.get(kind)


def import_page(
    raw: str,
    *,
    directory: Mapping[str, DirectoryModel],
    page_url: str | None = None,
    read: str | None = None,
    page_file: str | None = None,
) -> ImportedPage:
    """Turn one model page into a catalog entry (see the module's docstring); ValueError without a slug.

    ``page_file`` names the saved copy the entry was read from, so the import can be repeated."""
    lines = page_text(raw).splitlines()
    head, param_lines, closed = _sections(lines)
    problems: list[str] = []
    notes: list[str] = []
    old_blocks: list[tuple[str, bool, list[str]]] | None = None
    if not param_lines and _ATTRIBUTES in lines:  # the older layout
        old_blocks, end = _attribute_blocks(lines, problems)
        head, param_lines, closed = lines[: lines.index(_ATTRIBUTES)], [""], end >= 0
        texts_after = [line for line in lines[end + 1 :] if line] if end >= 0 else []
        if [line for line in head if line][:1] == ["POST"] and len(texts_after) >= 2:  # no heading
            head = texts_after[:2]
            notes.append(
                "title, description: the page opens with its code sample; read from below its fields"
            )
    joined = "\n".join(lines)
    slug = next((m[1] for pattern in _SLUG_PATTERNS for m in [pattern.search(joined)] if m), None)
    if slug is None:
        raise ValueError(
            "no model slug on the page (neither 'POST /v2/<slug>' nor 'POSThttps://api.segmind.com/v1/<slug>')"
        )
    record = directory.get(slug)
    texts = [line for line in head if line]
    title = texts[0].removesuffix(" Serverless API").strip() if texts else slug
    description = next(
        (line for line in texts[1:] if not _SECONDS.match(line) and not _PRICE.match(line)), ""
    )
    seconds = next((float(m[1]) for line in head for m in [_SECONDS.match(line)] if m), None)
    if seconds is None:
        if record is None or record.latency_s is None:
            problems.append("typical_seconds: not on the page nor in the directory")
        else:
            seconds = record.latency_s
            notes.append(f"typical_seconds: not on the page; the directory's average ({record.read})")
    found = next((m for line in head for m in [_PRICE.match(line)] if m), None)
    price = float(found[2] or found[1]) if found else None
    price_note = f"the page: ~${price:g}" if price is not None else None
    if found is not None and found[2]:
        price_note = (
            f"the page gives a range, ${found[1]} - ${found[2]} per generation (by parameters it does not "
            f"tie to prices): the upper bound, so a credit floor is never undershot"
        )
        notes.append(f"price_usd: {price_note}")
    if price is None:
        if record is None or record.price_usd is None:
            problems.append("price_usd: not on the page nor in the directory")
        else:
            price = record.price_usd
            price_note = f"not on the page; the directory's average (read {record.read})"
    api_format = next((m[1].strip() for line in head for m in [_API_FORMAT.match(line)] if m), None)
    if api_format is not None:
        notes.append(f"response: the page's API format is {api_format!r} (its Response Format sample)")
    returns = next(
        (line.split(":", 1)[1].strip().lower() for line in lines if line.startswith("Returns:")), ""
    )
    kind = record.output_kind if record is not None else _RETURNS.get(returns)
    if kind is None:
        problems.append(
            f"output.kind: the page says {returns or 'nothing'!r} and the directory does not list {slug!r}"
        )
    parameters: dict[str, Any] = {}
    rules: dict[tuple[str, str], list[str]] = {}
    if not param_lines:
        problems.append("parameters: the page has no Parameters section")
    elif not closed:
        problems.append(
            "parameters: the page ends before 'Response Type' (a cut copy): the list may be incomplete, "
            "and an entry refuses every field it does not list"
        )
    blocks: list[tuple[str, bool, list[str]]] = old_blocks or []
    for line in param_lines if old_blocks is None else ():
        match = _PARAM_START.match(line)
        if match:
            blocks.append((match[1], match[2] == "required", []))
        elif blocks:
            blocks[-1][2].append(line)
    unreadable = False
    for name, required, block in _fold_items(blocks, problems):
        spec = _parameter(name, block, problems)
        if spec is None:
            unreadable = True
            continue
        if required:
            spec = {"type": spec["type"], "required": True, **{k: v for k, v in spec.items() if k != "type"}}
        parameters[name] = spec
        when = _ONLY_WHEN.search(spec.get("description", ""))
        if when:
            rules.setdefault((when[1], when[2].rstrip(".,;")), []).append(name)
    format_field = next((n for n in FORMAT_FIELDS if "enum" in parameters.get(n, {})), None)
    default_format = parameters[format_field].get("default") if format_field else None
    task = _task(slug, title, description, kind or "", record)
    if task is None:
        problems.append("task: the page does not say and the directory does not list the model")
    entry: dict[str, Any] = {
        "slug": slug,
        "title": title,
        "page": page_url or f"https://www.segmind.com/models/{slug}/api",
        "read": read or dt.date.today().isoformat(),
        **({"page_file": page_file} if page_file else {}),
        "task": task,
        "description": description,
        "output": {"kind": kind, "format_field": format_field, "default_format": default_format},
        "typical_seconds": seconds,
        "price_usd": price,
        "price_note": price_note,
        "parameters": dict(sorted(parameters.items())),
        "rules": [
            {"kind": "only_with", "fields": sorted(fields), "field": field_name, "value": value}
            for (field_name, value), fields in sorted(rules.items())
            if field_name in parameters
        ],
        "import_notes": [*notes, *problems],
    }
    complete = closed and bool(param_lines) and not unreadable and None not in (task, kind, seconds, price)
    return ImportedPage(entry=entry, problems=problems, complete=complete)


def _rule_key(rule: Mapping[str, Any]) -> str:
    return json.dumps({k: sorted(v) if isinstance(v, list) else v for k, v in rule.items()}, sort_keys=True)


def diff_entries(imported: Mapping[str, Any], shipped: Mapping[str, Any]) -> list[str]:
    """Where two entries' contracts differ, as paths (``price_usd``, ``parameters.seed.minimum``).

    Titles, descriptions and notes are left out: they document, the rest is checked before spending.
    """
    paths = [key for key in CONTRACT_KEYS if imported.get(key) != shipped.get(key)]
    mine, theirs = imported.get("parameters", {}), shipped.get("parameters", {})
    for name in sorted({*mine, *theirs}):
        if name not in mine or name not in theirs:
            paths.append(f"parameters.{name}")
            continue
        for key in sorted({*mine[name], *theirs[name]} - {"description"}):
            if mine[name].get(key) != theirs[name].get(key):
                paths.append(f"parameters.{name}.{key}")
    if sorted(map(_rule_key, imported.get("rules", []))) != sorted(map(_rule_key, shipped.get("rules", []))):
        paths.append("rules")
    return paths
