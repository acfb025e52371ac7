"""A batch's ``{output_dir}/manifest.json``: what each item is, where it is stored, what it cost.

Written incrementally: each wave adds one small file under ``{output_dir}/manifest.d/`` holding only
the entries that changed (written atomically, named so that their order is the order they were
written); the batch's end writes ``manifest.json`` whole, naming the last delta it folds in, and
deletes the deltas. A reader (a rerun, a run started after a killed one) folds ``manifest.json`` and
any later deltas, so the manifest is readable at every point and its bytes grow with N, not N x waves.

The manifest is the batch's record across runs: an item whose fingerprint (model and payload,
``durable.fingerprint``) matches its entry and whose stored outputs still have the size and
sha256 recorded when they were stored is reused, not generated again (no decode: zeros left by a power
cut, an HTML error page or another item's image all differ). A manifest that cannot be read stops the
batch before anything is spent: paying for everything again is the user's call. Reading happens here;
writing goes through ``outputs.store_document`` (the only module that writes output files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segmind_provider.destination import filesystem_for
from segmind_provider.exceptions import SegmindOutputError, SegmindValidationError
from segmind_provider.media import SNIFF_BYTES, decode_problem, sniff_format
from segmind_provider.outputs import store_document

__all__ = [
    "DELTAS_NAME",
    "MANIFEST_NAME",
    "file_digest",
    "item_path",
    "manifest_uri",
    "output_intact",
    "output_matches",
    "read_manifest",
    "write_delta",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
DELTAS_NAME = "manifest.d"
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


def _read_json(uri: str, conn_id: str | None) -> dict[str, Any] | None:
    """One manifest file (whole or delta) as a dict with an ``items`` object; None when it is not there."""
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


def _deltas_uri(output_dir: Any) -> str:
    return _join(output_dir, DELTAS_NAME)


def _delta_names(output_dir: Any, conn_id: str | None) -> list[str]:
    """The deltas' file names, in the order they were written."""
    folder = _deltas_uri(output_dir)
    local = _local(folder)
    try:
        if local is not None:
            names = [p.name for p in local.iterdir()]
        else:
            fs = filesystem_for(folder, conn_id)
            names = [str(p).rstrip("/").rpartition("/")[2] for p in fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SegmindOutputError(f"cannot list the batch manifest's deltas {folder}: {exc}") from exc
    return sorted(name for name in names if name.endswith(".json") and not name.startswith("."))


def read_manifest(output_dir: Any, conn_id: str | None) -> dict[str, Any] | None:
    """The manifest in ``output_dir`` (``manifest.json`` with the deltas written after it folded in);
    None when there is none yet.

    One that is there but unreadable raises, naming the file and the problem: silently ignoring it
    would pay again for every item it lists.
    """
    data = _read_json(manifest_uri(output_dir), conn_id)
    through = str((data or {}).get("deltas_through") or "")
    for name in _delta_names(output_dir, conn_id):
        if name <= through:
            continue  # folded into manifest.json already (left by a compaction cut short)
        delta = _read_json(f"{_deltas_uri(output_dir)}/{name}", conn_id)
        if delta is None:
            continue
        if data is None:
            data = {"items": {}}
        data["items"] = {**data["items"], **delta["items"]}
        data.update(delta.get("meta") or {})
    return data


def write_delta(
    output_dir: Any, conn_id: str | None, entries: Mapping[str, Any], meta: Mapping[str, Any]
) -> str:
    """Add one wave's changed entries (and the batch's facts) to the manifest; the delta's URI."""
    name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
    data = json.dumps({"meta": dict(meta), "items": dict(entries)}, separators=(",", ":"), sort_keys=True)
    return store_document(data.encode(), f"{_deltas_uri(output_dir)}/{name}", output_conn_id=conn_id)


def write_manifest(output_dir: Any, conn_id: str | None, manifest: Mapping[str, Any]) -> str:
    """Write ``manifest.json`` whole (naming the last delta it replaces), then delete the deltas."""
    names = _delta_names(output_dir, conn_id)
    data = {**manifest, "deltas_through": names[-1] if names else None}
    uri = store_document(
        json.dumps(data, indent=1, sort_keys=True).encode(), manifest_uri(output_dir), output_conn_id=conn_id
    )
    local = _local(_deltas_uri(output_dir))
    for name in names:
        with contextlib.suppress(OSError):  # a delta left over is skipped by name on the next read
            if local is not None:
                (local / name).unlink(missing_ok=True)
            else:
                filesystem_for(_deltas_uri(output_dir), conn_id).rm(f"{_deltas_uri(output_dir)}/{name}")
    with contextlib.suppress(OSError):
        if local is not None:
            local.rmdir()
    return uri


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
