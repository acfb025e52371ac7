"""Payload checks driven by a catalog entry, made before any HTTP call so that mistakes cost nothing.

Strict types, unknown fields refused (with a "did you mean"), and every problem listed at once, each
naming the field, the value given and what is allowed. The only changes made to a valid payload are
the documented normalisations (see docs/models.md): integer text -> int, number text -> int/float,
"true"/"false" -> bool, and rounding where an entry says the service rounds.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from segmind_provider.catalog.entry import ModelEntry, Parameter
from segmind_provider.exceptions import SegmindValidationError

__all__ = ["allowed_text", "check_payload", "invalid_payload", "rule_text"]

_VALUE_PREVIEW = 80
_INT_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_\-\s]+=*\s*")
_NOUNS = {"integer": "an integer", "number": "a number"}


class _Invalid(ValueError):
    """One field's problem: the reason, without field name or value (the caller adds those)."""


def invalid_payload(model: str, lines: list[str]) -> SegmindValidationError:
    """The error listing every problem found in one payload."""
    noun = "problem" if len(lines) == 1 else "problems"
    return SegmindValidationError(
        f"Invalid payload for model {model!r} ({len(lines)} {noun}):\n" + "\n".join(lines)
    )


def preview(value: Any) -> str:
    """repr() shortened to 80 characters: prompts and base64 data can be long."""
    text = repr(value)
    return text if len(text) <= _VALUE_PREVIEW else text[: _VALUE_PREVIEW - 3] + "..."


def check_payload(
    entry: ModelEntry, payload: Mapping[str, Any], filled_later: Collection[str] = ()
) -> dict[str, Any]:
    """Validate ``payload`` for ``entry``; return it normalised, or raise listing every problem.

    ``filled_later`` names the fields the operator fills from input files after this check: they count
    as present for "required" and for rules, and must be file fields of this model not also in payload.
    """
    params = entry.parameters
    lines: list[str] = []
    for name, spec in params.items():
        if spec.required and name not in payload and name not in filled_later:
            lines.append(f"- {name}: required but missing; allowed: {allowed_text(spec)}")
    typed: dict[str, Any] = {}
    result: dict[str, Any] = {}
    for name, value in payload.items():
        param = params.get(name)
        if param is None:
            lines.append(_unknown(name, value, params))
            continue
        try:
            typed[name] = _typed(param, value)
            result[name] = _constrained(param, typed[name])
        except _Invalid as exc:
            lines.append(f"- {name}: {exc}; given {preview(value)}; allowed: {allowed_text(param)}")
    for name in filled_later:
        param = params.get(name)
        if param is None:
            lines.append(_unknown(name, "<input file>", params))
        elif param.media is None:
            lines.append(
                f"- {name}: takes no file, so input_files cannot fill it; allowed: {allowed_text(param)}"
            )
        elif name in payload:
            lines.append(f"- {name}: given both in the payload and as an input file; keep one")
    facts = _Facts(params, payload, typed, present={*typed, *filled_later})
    for rule in entry.rules:
        lines.extend(_RULES[rule["kind"]](rule, facts))
    if lines:
        raise invalid_payload(entry.slug, lines)
    return result


def _unknown(name: str, value: Any, params: Mapping[str, Parameter]) -> str:
    allowed = sorted(params)
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"- {name}: unknown field{hint}; given {preview(value)}; allowed fields: {', '.join(allowed)}"


def _typed(param: Parameter, value: Any) -> Any:
    """Check the JSON type, applying the text normalisations templates need."""
    if value is None:
        if param.nullable:
            return None
        if param.required:
            raise _Invalid("null is not allowed for a required field")
        raise _Invalid(f"null is not allowed; leave the field out to get the default {param.default!r}")
    kind = param.type
    if kind in ("integer", "number") and isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            value = int(text)
        elif kind == "number" and _NUMBER_TEXT.fullmatch(text):
            value = float(text)
    elif kind == "boolean" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Invalid("not a valid integer")
    if kind == "number" and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise _Invalid("not a valid number")
    if kind == "boolean" and not isinstance(value, bool):
        raise _Invalid("not true or false")
    if kind == "string" and not isinstance(value, str):
        raise _Invalid("not a valid string")
    if kind == "array":
        if not isinstance(value, (list, tuple)):
            raise _Invalid("not a list")
        value = list(value)
    return value


def _constrained(param: Parameter, value: Any) -> Any:
    """Check ranges, allowed values, lengths and file encodings; round where the service rounds."""
    if value is None:
        return None
    if param.enum is not None and value not in param.enum:
        raise _Invalid("not one of the allowed values")
    if param.type in ("integer", "number"):
        if param.minimum is not None and value < param.minimum:
            raise _Invalid(f"less than the minimum {_num(param.minimum)}")
        if param.maximum is not None and value > param.maximum:
            raise _Invalid(f"greater than the maximum {_num(param.maximum)}")
        return _multiple(param, value)
    if param.type == "string":
        _check_text(param, value)
        if param.media is not None:
            _check_file(param, value)
    if param.type == "array":
        if param.max_items is not None and len(value) > param.max_items:
            raise _Invalid(f"{len(value)} items, more than the {param.max_items} allowed")
        for index, item in enumerate(value):
            if param.media is not None:
                if not isinstance(item, str):
                    raise _Invalid(f"item {index} is not a string")
                _check_file(param, item, f"item {index} is ")
    return value


def _multiple(param: Parameter, value: float) -> Any:
    step = param.multiple_of
    if step is None:
        return value
    if param.round_to_multiple:  # halves round up, as the service documents (1032 -> 1040)
        rounded = math.floor(value / step + 0.5) * step
        return int(rounded) if isinstance(value, int) and float(step).is_integer() else rounded
    if not math.isclose(value / step, round(value / step)):
        raise _Invalid(f"not a multiple of {_num(step)}")
    return value


def _check_text(param: Parameter, value: str) -> None:
    if param.min_length and not value.strip():
        raise _Invalid("the text is empty or only whitespace")
    if param.min_length is not None and len(value.strip()) < param.min_length:
        raise _Invalid(f"shorter than {param.min_length} characters")
    if param.max_length is not None and len(value) > param.max_length:
        raise _Invalid(f"longer than {param.max_length} characters")


def _check_file(param: Parameter, value: str, prefix: str = "") -> None:
    """A file field takes an http(s) URL; a base64 field also takes base64 text or a data: URI."""
    if _is_http_url(value):
        return
    if param.encoding == "base64":
        if value.startswith("data:") and ";base64," in value[:100]:
            return
        if value.strip() and _BASE64_TEXT.fullmatch(value):
            return
        raise _Invalid(f"{prefix}neither an http(s) URL nor base64 data (use input_files for a local file)")
    raise _Invalid(f"{prefix}not an http(s) URL (use input_files for a local file or bucket path)")


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def allowed_text(param: Parameter) -> str:
    """What the field accepts, in words: quoted by error messages and by docs/models.md."""
    if param.enum is not None:
        text = "one of " + ", ".join(repr(v) for v in param.enum)
    elif param.type in _NOUNS:
        text = _NOUNS[param.type] + _range_text(param)
    elif param.type == "boolean":
        text = "true or false"
    elif param.media is not None:
        what = f"an http:// or https:// URL of {_a(param.media)}"
        text = what + (" or its base64 data" if param.encoding == "base64" else "")
        if param.type == "array":
            limit = f"up to {param.max_items} " if param.max_items is not None else ""
            text = f"a list of {limit}items, each {text}"
    elif param.type == "array":
        text = "a list" + (f" of up to {param.max_items} items" if param.max_items is not None else "")
    else:
        text = _string_text(param)
    return text + (", or null" if param.nullable else "")


def _a(media: str) -> str:
    return "an image" if media == "image" else f"a {media} file"


def _range_text(param: Parameter) -> str:
    lo, hi = param.minimum, param.maximum
    text = ""
    if lo is not None and hi is not None:
        text = f" from {_num(lo)} to {_num(hi)}"
    elif lo is not None:
        text = f" >= {_num(lo)}"
    elif hi is not None:
        text = f" <= {_num(hi)}"
    if param.multiple_of is not None:
        how = "rounded to the nearest" if param.round_to_multiple else "a"
        text += f", {how} multiple of {_num(param.multiple_of)}"
    return text


def _string_text(param: Parameter) -> str:
    text = "a non-empty string" if param.min_length == 1 else "a string"
    if param.min_length is not None and param.min_length > 1:
        text += f" of at least {param.min_length} characters"
    if param.max_length is not None:
        text += f" of at most {param.max_length} characters"
    return text


def rule_text(rule: Mapping[str, Any]) -> str:
    """A cross-field rule in words, for docs/models.md."""
    if rule["kind"] == "only_with":
        names = " and ".join(f"`{f}`" for f in rule["fields"])
        return (
            f"{names} only apply with `{rule['field']}` = {rule['value']!r}; with another value each must "
            "be left out or equal its default (the service would ignore it)"
        )
    present = " or ".join(f"`{f}`" for f in rule["present"])
    return f"`{rule['field']}` is at most {_num(rule['maximum'])} when {present} is given"


@dataclass(frozen=True)
class _Facts:
    """What a cross-field rule looks at: the entry's parameters and the payload as given and typed."""

    params: Mapping[str, Parameter]
    payload: Mapping[str, Any]
    typed: Mapping[str, Any]  # values that passed the type check (range and enum not yet applied)
    present: Collection[str]  # fields given or filled later from input files


def _only_with(rule: Mapping[str, Any], facts: _Facts) -> list[str]:
    """Fields the service ignores unless another field has one value: refuse rather than drop them."""
    params, payload, typed = facts.params, facts.payload, facts.typed
    switch, wanted = rule["field"], rule["value"]
    if switch in payload and switch not in typed:
        return []  # the switch itself is invalid; that problem is already listed
    actual = typed.get(switch, params[switch].default)
    allowed = params[switch].enum
    if (allowed is not None and actual not in allowed) or actual == wanted:
        return []
    lines = []
    for name in rule["fields"]:
        value = typed.get(name)
        if name not in typed or value is None or value == params[name].default:
            continue
        lines.append(
            f"- {name}: {name} only applies with {switch}={wanted!r}; with {switch}={actual!r} the service "
            f"ignores it and the result would not follow {name}={value!r}. Set {switch}={wanted!r} or "
            f"leave {name} out; given {preview(payload[name])}"
        )
    return lines


def _max_when_present(rule: Mapping[str, Any], facts: _Facts) -> list[str]:
    """A limit that only holds when another field is given (flux-kontext-pro's safety_tolerance)."""
    typed = facts.typed
    name, limit = rule["field"], rule["maximum"]
    given = [f for f in rule["present"] if f in facts.present and (f not in typed or typed[f] is not None)]
    value = typed.get(name)
    if not given or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if value <= limit:
        return []
    return [
        f"- {name}: at most {_num(limit)} when {' or '.join(given)} is given; given {preview(facts.payload[name])}"
    ]


_RULES: dict[str, Callable[[Mapping[str, Any], _Facts], list[str]]] = {
    "only_with": _only_with,
    "max_when_present": _max_when_present,
}
