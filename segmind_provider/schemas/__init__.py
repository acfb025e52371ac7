"""Payload schemas per Segmind model, checked before any HTTP call so that mistakes cost no credits.

Schemas are data: one pydantic model per model slug, kept in a registry. Models without a
schema pass through unchanged (Segmind has hundreds of models; refusing unknown ones would make
the provider useless for them). Add one with :func:`register_schema`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.schemas import flux_1_1_pro
from segmind_provider.schemas._base import SegmindPayload

__all__ = [
    "SegmindPayload",
    "expected_output_format",
    "get_schema",
    "register_schema",
    "validate_payload",
]

_REGISTRY: dict[str, type[BaseModel]] = {
    flux_1_1_pro.MODEL: flux_1_1_pro.FluxPro11Payload,
}

_VALUE_PREVIEW = 80


def get_schema(model: str) -> type[BaseModel] | None:
    """The schema registered for ``model`` (a Segmind slug), or None when it has none."""
    return _REGISTRY.get(model)


def register_schema(model: str, schema: type[BaseModel]) -> None:
    """Register (or replace) the schema for ``model``.

    Any pydantic v2 model works; subclass :class:`SegmindPayload` to get strict types, unknown
    fields refused, cross-field rules and the output-format hint.
    """
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"schema for {model!r} must be a pydantic BaseModel subclass, got {schema!r}")
    _REGISTRY[model] = schema


def validate_payload(model: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``payload`` against the model's schema and return the payload to send.

    The result holds exactly the keys the caller gave, with only the documented normalisations
    (integer text -> int, "true"/"false" -> bool, width/height rounded to a multiple of 16 for
    flux-1.1-pro). Raises SegmindValidationError listing every problem at once, each with the
    field, the value given and what is allowed.
    """
    if not isinstance(payload, Mapping):
        raise SegmindValidationError(
            f"Invalid payload for model {model!r}: expected a JSON object (a dict), "
            f"got {type(payload).__name__} {_preview(payload)}"
        )
    schema = get_schema(model)
    if schema is None:
        return dict(payload)
    try:
        validated = schema.model_validate(dict(payload))
    except ValidationError as exc:
        lines = [_describe(schema, err, payload) for err in exc.errors()]
        noun = "problem" if len(lines) == 1 else "problems"
        raise SegmindValidationError(
            f"Invalid payload for model {model!r} ({len(lines)} {noun}):\n" + "\n".join(lines)
        ) from None
    return {
        key: getattr(validated, key) if key in schema.model_fields else value
        for key, value in payload.items()
    }


def expected_output_format(model: str, payload: Mapping[str, Any]) -> str | None:
    """The file format the request asks for (e.g. "png"), or None when the model does not say.

    Used by the output verifier to refuse a file whose magic bytes disagree. Models without a
    schema return None: guessing from a generic ``output_format`` key could refuse good files.
    """
    schema = get_schema(model)
    if schema is None:
        return None
    field = getattr(schema, "output_format_field", None)
    default = getattr(schema, "default_output_format", None)
    value = payload.get(field, default) if field else default
    return value.lower() if isinstance(value, str) and value else None


def _describe(schema: type[BaseModel], err: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    loc = err.get("loc") or ()
    field = ".".join(str(part) for part in loc) or "(payload)"
    name = str(loc[0]) if loc else ""
    kind = err.get("type")
    if kind == "extra_forbidden":
        allowed = sorted(schema.model_fields)
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"- {field}: unknown field{hint}; given {_preview(err.get('input'))}; "
            f"allowed fields: {', '.join(allowed)}"
        )
    info = schema.model_fields.get(name)
    allowed_text = info.description if info is not None and info.description else "see the model page"
    if kind == "missing":
        return f"- {field}: required but missing; allowed: {allowed_text}"
    given = _preview(payload.get(name, err.get("input")))
    if kind in ("literal_error", "enum"):
        reason = "not one of the allowed values"  # pydantic's text repeats the list "allowed" gives
    else:
        reason = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"- {field}: {reason}; given {given}; allowed: {allowed_text}"


def _preview(value: Any) -> str:
    text = repr(value)
    if len(text) > _VALUE_PREVIEW:
        text = text[: _VALUE_PREVIEW - 3] + "..."
    return text
