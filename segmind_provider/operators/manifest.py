"""A batch's ``{output_dir}/manifest.json``: what each item is, where it is stored, what it cost.

The manifest is the batch's record across runs: an item whose fingerprint (model and payload,
``operators.durable.fingerprint``) matches its entry and whose stored outputs are still there and
decode in full is reused, not generated again. Reading happens here; writing goes through
``outputs.store_document`` (the only module that writes output files).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segmind_provider.media import SNIFF_BYTES, decode_problem, sniff_format

__all__ = ["MANIFEST_NAME", "item_path", "manifest_uri", "output_intact", "read_manifest"]

MANIFEST_NAME = "manifest.json"
_LOCAL_SCHEMES = ("", "file", "local")


def _join(output_dir: Any, name: str) -> str:
    return f"{str(output_dir).rstrip('/')}/{name}"


def item_path(output_dir: Any, key: str) -> str:
    """Where item ``key`` is stored, before its extension: ``{output_dir}/{key}``."""
    return _join(output_dir, key)


def manifest_uri(output_dir: Any) -> str:
    return _join(output_dir, MANIFEST_NAME)


def _local(uri: str) -> Path | None:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("file", "local"):
        return Path(unquote(parts.path))
    if scheme == "" or len(scheme) == 1:  # a plain path, or a Windows drive letter
        return Path(uri)
    return None


def _open(uri: str, conn_id: str | None) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id).open("rb")


def read_manifest(output_dir: Any, conn_id: str | None) -> dict[str, Any] | None:
    """The manifest in ``output_dir``; None when there is none or it is unreadable (nothing is reused)."""
    uri = manifest_uri(output_dir)
    local = _local(uri)
    try:
        if local is not None:
            text = local.read_text(encoding="utf-8")
        else:
            with _open(uri, conn_id) as handle:
                text = handle.read().decode("utf-8")
        data = json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("items"), Mapping):
        return None
    return data


def _intact_file(path: Path) -> bool:
    try:
        if path.stat().st_size == 0:
            return False
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return False
    return decode_problem(path, sniff_format(head)) is None


def output_intact(uri: str, conn_id: str | None) -> bool:
    """The stored output is there, not empty, and (for images) decodes in full."""
    local = _local(uri)
    if local is not None:
        return _intact_file(local)
    fd, name = tempfile.mkstemp(prefix="segmind-check-", suffix=os.path.splitext(uri)[1])
    try:
        with os.fdopen(fd, "wb") as sink, _open(uri, conn_id) as source:
            shutil.copyfileobj(source, sink)
        return _intact_file(Path(name))
    except (OSError, ValueError):
        return False
    finally:
        Path(name).unlink(missing_ok=True)
