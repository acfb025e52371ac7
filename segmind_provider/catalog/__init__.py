"""The model catalog: one JSON file per Segmind model, read once, used before any credit is spent.

Each entry (``catalog/models/<slug>.json``) holds a model's parameters as its page documents them,
which fields take files and how (URL or base64), the output kind, the typical duration, the price
per call and the page it comes from. Validation, cost estimates and docs/models.md all read it;
adding a model is adding its file. Models without an entry pass through unvalidated: Segmind has
hundreds, and refusing unknown ones would make the provider useless for them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any

from segmind_provider.catalog.entry import ModelEntry, Parameter, load_entries
from segmind_provider.catalog.validation import check_payload, preview
from segmind_provider.exceptions import SegmindValidationError

__all__ = [
    "ModelEntry",
    "Parameter",
    "estimate_cost",
    "expected_output_format",
    "get_model",
    "models",
    "typical_seconds",
    "validate_payload",
]


@functools.cache
def _entries() -> Mapping[str, ModelEntry]:
    return load_entries()


def get_model(slug: str) -> ModelEntry | None:
    """The catalog entry for ``slug``, or None for a model the catalog does not know."""
    return _entries().get(slug)


def models() -> list[ModelEntry]:
    """Every catalog entry, sorted by slug."""
    return [_entries()[slug] for slug in sorted(_entries())]


def validate_payload(
    model: str, payload: Mapping[str, Any], *, filled_later: Collection[str] = ()
) -> dict[str, Any]:
    """Check ``payload`` for ``model`` and return the payload to send.

    The result holds exactly the keys the caller gave, with only the documented normalisations
    (integer text -> int, number text -> int/float, "true"/"false" -> bool, rounding where the
    service rounds). Raises SegmindValidationError listing every problem at once, each with the
    field, the value given and what is allowed. ``filled_later`` names the fields input files will
    fill after this check (they count as present). Unknown models pass through unchanged.
    """
    if not isinstance(payload, Mapping):
        raise SegmindValidationError(
            f"Invalid payload for model {model!r}: expected a JSON object (a dict), "
            f"got {type(payload).__name__} {preview(payload)}"
        )
    entry = get_model(model)
    if entry is None:
        return dict(payload)
    return check_payload(entry, payload, filled_later)


def expected_output_format(model: str, payload: Mapping[str, Any]) -> str | None:
    """The file format the request asks for (e.g. "png"), or None when the catalog does not say.

    Used by the output verifier to refuse a file whose magic bytes disagree. Unknown models give
    None: guessing from a generic ``output_format`` key could refuse good files.
    """
    entry = get_model(model)
    if entry is None:
        return None
    field = entry.output_format_field
    value = payload.get(field, entry.default_output_format) if field else entry.default_output_format
    return value.lower() if isinstance(value, str) and value else None


def estimate_cost(model: str, payload: Mapping[str, Any] | None = None) -> float | None:
    """The price of one call in USD from the model's page, or None for a model not in the catalog.

    ``payload`` is taken for models priced per parameter; no current entry is (where a page gives a
    range, the entry holds the estimate its ``price_note`` explains).
    """
    entry = get_model(model)
    return entry.price_usd if entry is not None else None


def typical_seconds(model: str) -> float | None:
    """Submit-to-completion time the model's page gives, or None for a model not in the catalog."""
    entry = get_model(model)
    return entry.typical_seconds if entry is not None else None
