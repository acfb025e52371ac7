"""Download or decode Segmind outputs and store them: the only module of the provider that writes files.

Every output goes through the same three steps:

1. **stage**: stream the download (or write the decoded bytes) into a temporary file on local disk,
   never holding more than one chunk in memory; for a local destination the temporary file sits in
   the destination's directory so that step 3 is a rename on the same filesystem;
2. **verify**: size cap, length (when the server announced one), magic bytes against the requested
   format and against the destination's extension;
3. **publish**: local: ``os.replace`` (atomic); object storage: upload to a temporary key next to
   the destination, then move it into place.

All outputs of a request are staged and verified before the first one is published, and a
failure removes every temporary file: the destination holds the whole verified file or is left
exactly as it was. See docs/schemas-and-outputs.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from segmind_provider.destination import Destination, check_path_format, destination, filesystem
from segmind_provider.exceptions import SegmindError, SegmindOutputError
from segmind_provider.media import (
    EXTENSIONS,
    SNIFF_BYTES,
    check_size,
    decode_base64,
    decode_data_uri,
    decode_problem,
    normalize_format,
    redact_url,
    sniff_format,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DownloadFn",
    "check_path_format",
    "store_bytes",
    "store_document",
    "store_output",
    "store_text",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest output accepted (256 MiB): far above an image, enough for short videos."""

DownloadFn = Callable[[str, IO[bytes]], str]
"""``download(url, fileobj)``: stream the body of ``url`` into ``fileobj`` and return its Content-Type.

The hook's ``download`` is the one implementation: key-less, capped, complete or raising.
"""

DOWNLOAD_ATTEMPTS = 2
"""A downloaded image that does not decode is fetched once more, then refused."""

_FLAT_STORES = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "wasb", "wasbs", "oci", "oss", "memory"}
)


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    """One output: a URL to download or bytes already decoded."""

    url: str | None = None
    data: bytes | None = None
    content_type: str = ""
    strict_kind: bool = False  # raw base64: refuse bytes that are no known media


_OUTPUT_KEYS = ("image", "images", "output", "outputs", "url", "urls", "video", "audio", "data", "b64_json")


def _sources(output: Any, max_bytes: int) -> list[_Source]:
    """Flatten the output as the API gave it into the list of things to store."""
    if isinstance(output, str):
        return [_source_from_text(output.strip(), max_bytes)]
    if isinstance(output, (list, tuple)):
        return [src for item in output for src in _sources(item, max_bytes)]
    if isinstance(output, Mapping):
        for key in _OUTPUT_KEYS:
            if output.get(key):
                return _sources(output[key], max_bytes)
        raise SegmindOutputError(
            f"cannot find the output in a dict with keys {sorted(map(str, output))}; "
            f"expected one of {', '.join(_OUTPUT_KEYS)}"
        )
    raise SegmindOutputError(f"cannot store an output of type {type(output).__name__}")


def _source_from_text(text: str, max_bytes: int) -> _Source:
    if not text:
        raise SegmindOutputError("the output is an empty string")
    scheme = urlsplit(text).scheme.lower() if ":" in text[:12] else ""
    if scheme in ("http", "https"):
        return _Source(url=text)
    if scheme == "data":
        data, content_type = decode_data_uri(text, max_bytes)
        return _Source(data=data, content_type=content_type)
    if scheme:
        raise SegmindOutputError(
            f"refusing to fetch an output URL with scheme {scheme!r}: only http and https are downloaded"
        )
    return _Source(data=decode_base64(text, max_bytes), strict_kind=True)


# ---------------------------------------------------------------- staging


@dataclass
class _Staged:
    path: Path
    kind: str | None
    content_type: str


def _new_temp(directory: Path | None, stem: str) -> tuple[Path, IO[bytes]]:
    """A new private temporary file; in ``directory`` (same filesystem as the destination) when given."""
    if directory is None:
        fd, name = tempfile.mkstemp(prefix="segmind-", suffix=".part")
        return Path(name), os.fdopen(fd, "w+b")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".{stem[:100]}.{secrets.token_hex(6)}.part"  # short: names have a length limit
    # 0o666 through the umask: the published file gets the permissions a normal write would give.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    return path, os.fdopen(fd, "w+b")


def _stage(
    source: _Source,
    dest: Destination,
    download: DownloadFn | None,
    max_bytes: int,
    expected: str | None,
) -> _Staged:
    where = redact_url(source.url) if source.url else "the inline output"
    attempts = DOWNLOAD_ATTEMPTS if source.url else 1
    for attempt in range(1, attempts + 1):
        path, fileobj = _new_temp(dest.local_dir, dest.stem)
        try:
            with fileobj:
                content_type = _fill(source, fileobj, download, max_bytes)
                size = fileobj.tell()
                fileobj.flush()
                os.fsync(fileobj.fileno())
                fileobj.seek(0)
                head = fileobj.read(SNIFF_BYTES)
            if size == 0:
                raise SegmindOutputError(f"{where} is empty")
            kind = sniff_format(head)
            _verify_kind(kind, expected, dest, where, source.strict_kind)
            problem = decode_problem(path, kind)
            if problem is None:
                return _Staged(path, kind, content_type)
            if attempt == attempts:
                tries = f" ({attempts} downloads)" if attempts > 1 else ""
                raise SegmindOutputError(f"{where} is a broken {kind} file{tries}, not stored: {problem}")
            path.unlink(missing_ok=True)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _fill(source: _Source, fileobj: IO[bytes], download: DownloadFn | None, max_bytes: int) -> str:
    if source.data is not None:
        check_size(len(source.data), max_bytes)
        fileobj.write(source.data)
        return source.content_type
    assert source.url is not None
    if download is None:
        raise SegmindOutputError("the output is a URL but no download function was given")
    try:
        content_type = download(source.url, fileobj)
    except SegmindError:
        raise
    except Exception as exc:
        raise SegmindOutputError(
            f"downloading {redact_url(source.url)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    fileobj.seek(0, os.SEEK_END)
    return content_type or ""


def _verify_kind(kind: str | None, expected: str | None, dest: Destination, where: str, strict: bool) -> None:
    found = f"a {kind} file" if kind else "in no recognised format"
    if expected in EXTENSIONS and kind != expected:
        raise SegmindOutputError(
            f"{where} is {found}, but {expected} was requested: refusing to store a mismatched file"
        )
    wanted = dest.suffix_kind
    if wanted is not None and kind != wanted:
        raise SegmindOutputError(
            f"{where} is {found}, but output_path ends in {dest.suffix!r}: refusing to store a "
            f"mismatched file (drop the extension to have the matching one appended)"
        )
    if strict and kind is None:
        raise SegmindOutputError(f"{where} decodes as base64 to no known media format")


# ---------------------------------------------------------------- publishing


def _publish_local(staged: _Staged, target: Path) -> None:
    os.replace(staged.path, target)
    with contextlib.suppress(OSError):  # directory fsync is POSIX-only; best effort
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish_remote(staged_items: list[tuple[_Staged, str]], dest: Destination) -> None:
    fs, probe = filesystem(dest)
    parent = probe.parent.path
    if probe.protocol not in _FLAT_STORES:
        # sftp, hdfs, smb... need the directory; object stores have none, and s3fs would
        # create a missing *bucket* here, a side effect nobody asked for.
        fs.makedirs(parent, exist_ok=True)
    for staged, name in staged_items:
        final = f"{parent.rstrip('/')}/{name}"
        temp = f"{parent.rstrip('/')}/.{name[:100]}.{secrets.token_hex(6)}.part"
        try:
            fs.put_file(str(staged.path), temp)
            try:
                fs.mv(temp, final)
            except NotImplementedError:
                # No server-side move: write directly. An object PUT is all-or-nothing anyway.
                fs.put_file(str(staged.path), final)
        finally:
            with contextlib.suppress(Exception):
                if fs.exists(temp):
                    fs.rm(temp)


# ---------------------------------------------------------------- public API


def store_output(
    output: Any,
    output_path: Any,
    *,
    download: DownloadFn | None,
    output_conn_id: str | None = None,
    expected_format: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Store the output of a request at ``output_path`` and return the stored URIs, in output order.

    ``output`` is what the API returned: an http(s) URL, a ``data:`` URI, raw base64, a list of
    those, or a dict holding one (``{"image": ...}``). URLs are fetched with ``download`` (see
    :data:`DownloadFn`); other URL schemes are refused. ``output_path`` is a local path or an
    ObjectStoragePath URI (``file://``, ``s3://``, ``memory://``...), ``output_conn_id`` its
    connection. Without a known extension the sniffed one is appended; several outputs are
    numbered ``-1``, ``-2``... before the extension. ``expected_format`` ("png", "jpg"...) is
    what was requested: any other content is a SegmindOutputError and nothing is written.
    """
    sources = _sources(output, max_bytes)
    if not sources:
        raise SegmindOutputError("the result holds no output to store")
    return _store(sources, output_path, download, output_conn_id, expected_format, max_bytes)


def store_bytes(
    content: bytes,
    content_type: str,
    output_path: Any,
    *,
    output_conn_id: str | None = None,
    expected_format: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Store bytes already received (the sync ``POST /v1/{model}`` answer) with the same rules as :func:`store_output`."""
    source = _Source(data=bytes(content), content_type=content_type or "")
    return _store([source], output_path, None, output_conn_id, expected_format, max_bytes)


def store_document(data: bytes, output_path: Any, *, output_conn_id: str | None = None) -> str:
    """Publish a small non-media file (a manifest, a text output) at ``output_path`` the same atomic way; its URI."""
    dest = destination(output_path, output_conn_id)
    path, fileobj = _new_temp(dest.local_dir, dest.stem)
    try:
        with fileobj:
            fileobj.write(data)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        staged = _Staged(path, None, "application/json")
        if dest.local_dir is not None:
            _publish_local(staged, dest.local_dir / dest.stem)
        else:
            _publish_remote([(staged, dest.stem)], dest)
        return dest.uri(dest.stem)
    finally:
        path.unlink(missing_ok=True)


def store_text(output: Any, output_path: Any, *, output_conn_id: str | None = None) -> str:
    """Write a text model's output at ``output_path`` as UTF-8, the same atomic way; its URI.

    A string is written as it is (``.txt`` appended when the path has no extension); any other
    JSON value as indented JSON (``.json`` appended).
    """
    if output is None:
        raise SegmindOutputError("the result holds no output to store")
    is_text = isinstance(output, str)
    data = (output if is_text else json.dumps(output, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    text = str(output_path) if not isinstance(output_path, os.PathLike) else os.fspath(output_path)
    if not os.path.splitext(urlsplit(text).path)[1]:
        text += ".txt" if is_text else ".json"
    return store_document(data, text, output_conn_id=output_conn_id)


def _store(
    sources: list[_Source],
    output_path: Any,
    download: DownloadFn | None,
    output_conn_id: str | None,
    expected_format: str | None,
    max_bytes: int,
) -> list[str]:
    dest = destination(output_path, output_conn_id)
    expected = normalize_format(expected_format)
    staged: list[_Staged] = []
    try:
        for source in sources:
            staged.append(_stage(source, dest, download, max_bytes, expected))
        several = len(staged) > 1
        names = [
            dest.name(i if several else None, s.kind, s.content_type) for i, s in enumerate(staged, start=1)
        ]
        if dest.local_dir is not None:
            for item, name in zip(staged, names, strict=True):
                target = dest.local_dir / name
                if target.is_dir():
                    raise SegmindOutputError(f"{target} is a directory; cannot replace it with a file")
                _publish_local(item, target)
        else:
            _publish_remote(list(zip(staged, names, strict=True)), dest)
        return [dest.uri(name) for name in names]
    except SegmindError:
        raise
    except Exception as exc:
        raise SegmindOutputError(f"storing the output failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for item in staged:
            item.path.unlink(missing_ok=True)
