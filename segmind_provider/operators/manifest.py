"""A batch's ``{output_dir}/manifest.json``: what each item is, where it is stored, what it cost.

The manifest is the batch's record across runs: an item whose fingerprint (model and payload,
``operators.durable.fingerprint``) matches its entry and whose stored outputs still have the size and
sha256 recorded when they were stored is reused, not generated again (no decode: zeros left by a power
cut, an HTML error page or another item's image all differ). A manifest that cannot be read stops the
batch before anything is spent: paying for everything again is the user's call. Reading happens here;
writing goes through ``outputs.store_document`` (the only module that writes output files).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segmind_provider.exceptions import SegmindOutputError, SegmindValidationError
from segmind_provider.media import SNIFF_BYTES, decode_problem, sniff_format

__all__ = [
    "MANIFEST_NAME",
    "file_digest",
    "item_path",
    "manifest_uri",
    "output_intact",
    "output_matches",
    "read_manifest",
]

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


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
    """The manifest in ``output_dir``; None when there is none yet.

    One that is there but unreadable raises, naming the file and the problem: silently ignoring it
    would pay again for every item it lists.
    """
    uri = manifest_uri(output_dir)
    local = _local(uri)
    try:
        if local is not None:
            raw = local.read_bytes()
        else:
            with _open(uri, conn_id) as handle:
                raw = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:  # permissions, a storage outage: retrying may help, paying again would not
        raise SegmindOutputError(
            f"cannot read the batch manifest {uri}: {type(exc).__name__}: {exc}; nothing was submitted"
        ) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(uri, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), Mapping):
        raise _unreadable(uri, 'it is JSON but not a batch manifest (no "items" object)')
    return data


def _unreadable(uri: str, problem: str) -> SegmindValidationError:
    return SegmindValidationError(
        f"the batch manifest {uri} cannot be read ({problem}); nothing was submitted. Fix the file, or "
        f"delete it (every item is then generated and paid for again), or set reuse=False to ignore it "
        f"this once (it is then overwritten)"
    )


def file_digest(uri: str, conn_id: str | None) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a stored output, read in chunks; recorded in the manifest when stored."""
    local = _local(uri)
    digest, size = hashlib.sha256(), 0
    with local.open("rb") if local is not None else _open(uri, conn_id) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def output_matches(uri: str, size: Any, sha256: Any, conn_id: str | None) -> bool:
    """The stored output still has the size and digest recorded when it was stored (size first: free)."""
    local = _local(uri)
    try:
        if local is not None and local.stat().st_size != size:
            return False
        return file_digest(uri, conn_id) == (size, sha256)
    except (OSError, ValueError):
        return False


def _intact_file(path: Path) -> bool:
    try:
        if path.stat().st_size == 0:
            return False
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return False
    kind = sniff_format(head)
    return kind is not None and decode_problem(path, kind) is None


def output_intact(uri: str, conn_id: str | None) -> bool:
    """For an entry written before sizes and digests were recorded: the stored output is there, in a
    format it can be recognised as, and (for images) decodes in full."""
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
