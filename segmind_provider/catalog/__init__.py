"""The model catalog: full entries for the models content teams use, and Segmind's whole directory.

A full entry (``catalog/models/<slug>.json``) holds a model's parameters as its page documents them,
which fields take files and how (URL or base64), the output kind, the typical duration, the price
per call and the page it comes from; validation reads it. The directory
(``catalog/data/directory.txt``, ``catalog.directory``) knows every other Segmind model by its
category, output kind, average price and latency: such a model is priced for ``credit_floor``,
waited for on its own schedule and deadline, and its payload passes through unvalidated. A user
catalog folder (the connection extra ``catalog_dir`` or ``SEGMIND_CATALOG_DIR``) adds entries
(``models/*.json``) and a refreshed directory (``directory.json``), winning over the shipped ones.
Everything is read on first use, once per process and folder.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Collection, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from segmind_provider.catalog.directory import (
    DirectoryModel,
    category_kinds,
    load_user_directory,
    nearest,
    shipped_directory,
)
from segmind_provider.catalog.entry import ModelEntry, Parameter, load_entries, load_entries_from
from segmind_provider.catalog.validation import check_payload, preview
from segmind_provider.exceptions import SegmindValidationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_CATALOG_DIR",
    "DirectoryModel",
    "ModelEntry",
    "Parameter",
    "announce",
    "default_timeout",
    "directory_model",
    "directory_models",
    "estimate_cost",
    "expected_output_format",
    "get_model",
    "is_known",
    "model_notice",
    "models",
    "nearest_slugs",
    "output_kind",
    "reload",
    "successor_of",
    "timeout_seconds",
    "typical_seconds",
    "use_catalog_dir",
    "user_catalog_dir",
    "validate_payload",
]

#: The user catalog folder when no connection names one.
ENV_CATALOG_DIR = "SEGMIND_CATALOG_DIR"
#: The operators' deadline for a model with no latency, and the least any model gets.
DEFAULT_TIMEOUT = 600.0
#: A model's default deadline is this many times its average latency (the average hides a long tail).
TIMEOUT_HEADROOM = 2.5

_configured_dir: str | None = None


def use_catalog_dir(folder: str | None) -> None:
    """Read the user catalog from ``folder`` from now on (the connection's ``catalog_dir`` extra).

    Process-wide, like the catalog itself: one deployment has one user catalog. None keeps the
    current choice (the environment variable when nothing was set).
    """
    global _configured_dir
    if folder:
        _configured_dir = str(folder)


def user_catalog_dir() -> Path | None:
    """The user catalog folder in use: the connection's, else ``SEGMIND_CATALOG_DIR``, else none."""
    raw = _configured_dir or os.environ.get(ENV_CATALOG_DIR, "").strip()
    return Path(raw).expanduser() if raw else None


def _folder_key() -> str:
    folder = user_catalog_dir()
    return str(folder) if folder is not None else ""


@functools.cache
def _shipped_entries() -> Mapping[str, ModelEntry]:
    return MappingProxyType(load_entries())


@functools.cache
def _entries_in(folder: str) -> Mapping[str, ModelEntry]:
    if not folder:
        return _shipped_entries()
    return MappingProxyType({**_shipped_entries(), **load_entries_from(Path(folder) / "models")})


def _entries() -> Mapping[str, ModelEntry]:
    return _entries_in(_folder_key())


@functools.cache
def _shipped_directory() -> Mapping[str, DirectoryModel]:
    return MappingProxyType(shipped_directory())


@functools.cache
def _directory_in(folder: str) -> Mapping[str, DirectoryModel]:
    if not folder:
        return _shipped_directory()
    shipped = _shipped_directory()
    user = load_user_directory(Path(folder), category_kinds(shipped.values()))
    return MappingProxyType({**shipped, **user})


def _directory() -> Mapping[str, DirectoryModel]:
    return _directory_in(_folder_key())


def reload() -> None:
    """Forget what was read (after ``refresh`` or ``import`` wrote the user catalog in this process)."""
    for cached in (_entries_in, _directory_in):
        cached.cache_clear()


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
    """The price of one call in USD: the model's page, else the directory's average, else None.

    ``payload`` is taken for models priced per parameter; no current entry is (where a page gives a
    range, the entry holds the estimate its ``price_note`` explains).
    """
    entry = get_model(model)
    if entry is not None:
        return entry.price_usd
    record = directory_model(model)
    return record.price_usd if record is not None else None


def typical_seconds(model: str) -> float | None:
    """Submit-to-completion time: the model's page, else the directory's average latency, else None."""
    entry = get_model(model)
    if entry is not None:
        return entry.typical_seconds
    record = directory_model(model)
    return record.latency_s if record is not None else None


def directory_model(slug: str) -> DirectoryModel | None:
    """The directory's record of ``slug`` (user catalog first), or None for a slug it does not list."""
    return _directory().get(slug)


def directory_models() -> list[DirectoryModel]:
    """Every directory record, sorted by slug."""
    return [_directory()[slug] for slug in sorted(_directory())]


def is_known(model: str) -> bool:
    """True for a model with a full entry or a directory record."""
    return get_model(model) is not None or directory_model(model) is not None


def output_kind(model: str) -> str | None:
    """What the model returns (image, video, audio, text, json, 3d), or None for an unknown model."""
    entry = get_model(model)
    if entry is not None:
        return entry.output_kind
    record = directory_model(model)
    return record.output_kind if record is not None else None


def default_timeout(model: str) -> float:
    """The operators' default deadline: 2.5 times the model's typical time, and at least 600 s."""
    typical = typical_seconds(model)
    return DEFAULT_TIMEOUT if typical is None else max(DEFAULT_TIMEOUT, round(TIMEOUT_HEADROOM * typical))


def timeout_seconds(timeout: float | timedelta | None, model: str) -> float:
    """An operator's ``timeout`` in seconds; None is the model's :func:`default_timeout`."""
    if timeout is None:
        return default_timeout(model)
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)


def successor_of(model: str) -> str | None:
    """The directory's newer model of the same family and task, if it names one."""
    record = directory_model(model)
    return record.successor if record is not None else None


def nearest_slugs(model: str, count: int = 3) -> list[str]:
    """The known slugs closest to ``model`` (what a typo probably meant), best first."""
    return nearest(model, {*_entries(), *_directory()}, count)


def model_notice(model: str) -> str | None:
    """What the task log should say once about ``model`` before anything is spent, or None.

    A model the directory marks retired is refused (SegmindValidationError, naming its successor);
    an unknown slug gets the nearest known ones; a directory model without a full entry is said to
    pass unvalidated.
    """
    if get_model(model) is not None:
        return None
    record = directory_model(model)
    if record is None:
        close = nearest_slugs(model)
        hint = f"; nearest known: {', '.join(close)}" if close else ""
        return f"Model {model!r} is in neither the catalog nor Segmind's directory (a typo?){hint}"
    if record.retired:
        successor = f"; use {record.successor!r} instead" if record.successor else ""
        raise SegmindValidationError(
            f"Model {model!r} is retired (Segmind's model list, read {record.read}){successor}"
        )
    return (
        f"Model {model!r} ({record.title}) has no full catalog entry: its payload is sent unvalidated; "
        f"{record.output_kind} output, directory average ${record.price_usd} and "
        f"{record.latency_s if record.latency_s is not None else 'unknown'} s (read {record.read})"
    )


def announce(model: str, log: logging.Logger | Any) -> None:
    """Say :func:`model_notice` in the task log, once per try: a warning for an unknown slug."""
    notice = model_notice(model)
    if notice is not None:
        (log.info if is_known(model) else log.warning)("%s", notice)
