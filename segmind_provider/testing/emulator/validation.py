"""Server-side parameter checks written from the catalog entry's data, so client bugs surface as 400s.

The emulator shares no code with the provider's own validation on purpose: if both sides
drifted the same way, no test would notice. Every problem is reported, each message starting
with the field's name (the first one leads the message).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import ModelSpec

# Named aspect ratios: 1:1 is exactly 1024x1024, the others are about one megapixel
# (1024*1024 pixels) with both sides rounded to a multiple of 16.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:3": (1184, 880),
    "3:4": (880, 1184),
    "5:4": (1152, 912),
    "4:5": (912, 1152),
    "21:9": (1568, 672),
    "9:21": (672, 1568),
}
OUTPUT_FORMATS = ("webp", "jpg", "png")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]*={0,2}\s*$")


class ParamError(ValueError):
    """A parameter the service would reject; the message names the field."""


def round_to(value: float, step: float) -> int:
    """Round to the nearest multiple of `step` (halves round up, like the service documents)."""
    return int(int(value / step + 0.5) * step)


def round16(value: int) -> int:
    return round_to(value, 16)


def validate(spec: ModelSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a request body against the model's parameters and rules; return the normalised values.

    Unknown fields are ignored (as the service does); defaults are filled in; numbers the entry
    says are rounded (`round_to_multiple`) are rounded.
    """
    if spec.parameters is None:
        # A directory model: Segmind's page was not read, so nothing is known to refuse.
        return dict(body) if spec.directory else validate_lenient(body)
    params: dict[str, Any] = {}
    problems: list[str] = []
    for name, param in spec.parameters.items():
        if param.get("media") and not param.get("required") and body.get(name) is None:
            continue  # a default file (the model page's example URL) is not the emulator's to fetch
        try:
            value = check_value(name, param, body.get(name))
        except ParamError as exc:
            problems.append(str(exc))
            continue
        if value is not None:
            params[name] = value
    if not problems:
        for rule in spec.rules:
            problems.extend(RULES[rule["kind"]](rule, params, body))
    if problems:
        raise ParamError("; ".join(problems))
    return params


def check_value(name: str, param: Mapping[str, Any], value: Any) -> Any:
    """One field: presence, type, range, allowed values, length, multiple, file encoding."""
    if value is None:
        if param.get("required"):
            raise ParamError(f"{name}: required")
        return param.get("default")
    kind = param["type"]
    if kind == "array":
        return _check_array(name, param, value)
    value = _typed(name, kind, value)
    if "enum" in param and value not in param["enum"]:
        raise ParamError(f"{name}: must be one of {', '.join(map(str, param['enum']))}, got {value!r}")
    if isinstance(value, str):
        _check_length(name, param, value)
        if param.get("media"):
            check_encoding(name, param.get("encoding", "url"), value)
    elif kind in ("integer", "number"):
        value = _check_number(name, param, value)
    return value


def _typed(name: str, kind: str, value: Any) -> Any:
    if kind == "string":
        if not isinstance(value, str):
            raise ParamError(f"{name}: must be a string")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ParamError(f"{name}: must be a boolean")
    elif kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{name}: must be an integer")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{name}: must be a number")
    return value


def _check_length(name: str, param: Mapping[str, Any], value: str) -> None:
    if "min_length" in param and len(value) < param["min_length"]:
        if param["min_length"] == 1:
            raise ParamError(f"{name}: must be a non-empty string")
        raise ParamError(f"{name}: must be at least {param['min_length']} characters")
    if "max_length" in param and len(value) > param["max_length"]:
        raise ParamError(f"{name}: must be at most {param['max_length']} characters, got {len(value)}")


def _check_number(name: str, param: Mapping[str, Any], value: float) -> float:
    lo, hi = param.get("minimum"), param.get("maximum")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        low = "-inf" if lo is None else lo
        high = "inf" if hi is None else hi
        raise ParamError(f"{name}: must be between {low} and {high}, got {value}")
    step = param.get("multiple_of")
    if step and value % step:
        if not param.get("round_to_multiple"):
            raise ParamError(f"{name}: must be a multiple of {step}, got {value}")
        value = round_to(value, step)
    return value


def _check_array(name: str, param: Mapping[str, Any], value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ParamError(f"{name}: must be an array")
    if "max_items" in param and len(value) > param["max_items"]:
        raise ParamError(f"{name}: at most {param['max_items']} items, got {len(value)}")
    if param.get("required") and not value:
        raise ParamError(f"{name}: must not be empty")
    if param.get("media"):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ParamError(f"{name}[{i}]: must be a string")
            check_encoding(f"{name}[{i}]", param.get("encoding", "url"), item)
    return value


def check_encoding(name: str, encoding: str, value: str) -> None:
    """A file field holds a URL or base64 data, as the entry says; the other form is refused."""
    if encoding == "url":
        if not value.startswith(("http://", "https://")):
            raise ParamError(f"{name}: must be an http(s) URL (this model takes the file by URL)")
        return
    try:
        decode_base64(value)
    except ValueError:
        raise ParamError(f"{name}: must be base64-encoded file data (this model takes base64)") from None


def decode_base64(value: str) -> bytes:
    """Plain base64 or a `data:<type>;base64,` URI; ValueError for anything else (URLs included)."""
    if value.startswith("data:"):
        header, sep, value = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ValueError("not a base64 data URI")
    if not value.strip() or not _BASE64.match(value):
        raise ValueError("not base64")
    try:
        return base64.b64decode(value, validate=False)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


# -- cross-field rules: the catalog's small vocabulary -------------------------------------
Rule = Callable[[Mapping[str, Any], dict[str, Any], Mapping[str, Any]], list[str]]


def _only_with(rule: Mapping[str, Any], params: dict[str, Any], body: Mapping[str, Any]) -> list[str]:
    """`fields` apply only when `field` equals `value`: otherwise the service ignores them (so do we)."""
    if params.get(rule["field"]) != rule["value"]:
        for name in rule["fields"]:
            params.pop(name, None)
    return []


def _max_when_present(rule: Mapping[str, Any], params: dict[str, Any], body: Mapping[str, Any]) -> list[str]:
    """`field` is at most `maximum` when any of the `present` fields is given: a 400 otherwise."""
    given = [name for name in rule["present"] if body.get(name) is not None]
    name, limit = rule["field"], rule["maximum"]
    value = params.get(name)
    if given and value is not None and value > limit:
        return [f"{name}: must be at most {limit} when {given[0]} is given, got {value}"]
    return []


RULES: dict[str, Rule] = {"only_with": _only_with, "max_when_present": _max_when_present}


# -- registered models without catalog data ----------------------------------------------
def validate_lenient(body: Mapping[str, Any]) -> dict[str, Any]:
    """Checks for models registered at run time: only the fields the renderer uses."""
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise ParamError("prompt: must be a string")
    aspect = body.get("aspect_ratio", "1:1")
    if aspect not in ("custom", *ASPECT_RATIOS):
        raise ParamError(f"aspect_ratio: must be one of custom, {', '.join(ASPECT_RATIOS)}")
    params: dict[str, Any] = {"prompt": prompt, "aspect_ratio": aspect}
    for name, default, lo, hi in (
        ("width", 1024, 64, 2048),
        ("height", 1024, 64, 2048),
        ("output_quality", 80, 0, 100),
        ("seed", None, 0, 2**63 - 1),
    ):
        spec = {"type": "integer", "minimum": lo, "maximum": hi, "default": default}
        value = check_value(name, spec, body.get(name))
        if value is not None:
            params[name] = value
    fmt = body.get("output_format", "webp")
    if fmt not in OUTPUT_FORMATS:
        raise ParamError(f"output_format: must be one of {', '.join(OUTPUT_FORMATS)}")
    params["output_format"] = fmt
    return params
