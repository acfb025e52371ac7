"""Where outputs go: ``output_path`` read into a destination, and refused up front when unusable.

``outputs`` writes there; the operators call :func:`check_output_path` before they submit, so a
path that could never hold the output fails before any credit is spent:

* an extension that contradicts the requested format;
* a ``..`` segment (after percent-decoding): ``output_path`` is often templated from run
  configuration, and a path must say where it writes without climbing out of a folder;
* a URL scheme with no storage behind it: Airflow (a provider, or ``output_conn_id``'s attached
  store) or fsspec must give a filesystem for it, and http(s) is refused (read-only there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from segmind_provider.exceptions import SegmindOutputError, SegmindValidationError
from segmind_provider.media import KIND_OF_EXTENSION, extension_for, normalize_format

__all__ = [
    "Destination",
    "check_output_path",
    "check_path_format",
    "destination",
    "filesystem",
    "filesystem_for",
]

LOCAL_SCHEMES = ("", "file", "local")
READ_ONLY_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Destination:
    """Where the files go, and how their names are derived from the path the user gave."""

    local_dir: Path | None  # set for local destinations
    remote_parent: str | None  # "s3://bucket/dir" for object storage (no user info)
    conn_id: str | None
    display_prefix: str  # "", or "file://" when the user wrote a file:// URI
    stem: str
    suffix: str  # the user's extension when it names a known kind, else ""

    @property
    def suffix_kind(self) -> str | None:
        return KIND_OF_EXTENSION.get(self.suffix.lower())

    def name(self, index: int | None, kind: str | None, content_type: str) -> str:
        numbered = self.stem if index is None else f"{self.stem}-{index}"
        return numbered + (self.suffix or extension_for(kind, content_type))

    def uri(self, name: str) -> str:
        if self.local_dir is not None:
            return self.display_prefix + str(self.local_dir / name)
        return f"{self.remote_parent}/{name}"


def _refuse_traversal(text: str, path: str, *, decode: bool) -> None:
    """A ``..`` segment (percent-decoded in URIs, where ``%2e%2e`` means ``..``) or a NUL byte."""
    segments = (unquote(path) if decode else path).replace("\\", "/").split("/")
    if ".." in segments or "\x00" in path:
        raise SegmindValidationError(
            f"output_path {text!r} climbs out of its folder ('..') or holds a NUL byte: "
            f"give the path it should write to, without '..'"
        )


def destination(output_path: Any, output_conn_id: str | None) -> Destination:
    """Read ``output_path`` (a local path, or a URI) into where and under which name files are stored."""
    conn_id = output_conn_id or getattr(output_path, "conn_id", None)
    text = str(output_path) if not isinstance(output_path, os.PathLike) else os.fspath(output_path)
    if not text or text.endswith(("/", os.sep)):
        raise SegmindOutputError(f"output_path {text!r} must name a file, not a directory")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES or len(scheme) == 1:  # one letter: a Windows drive
        uri = scheme in ("file", "local")
        _refuse_traversal(text, parts.path if uri else text, decode=uri)
        local = Path(unquote_to_bytes(parts.path).decode() if uri else text)
        local = local.expanduser().absolute()
        if local.is_dir():
            raise SegmindOutputError(f"output_path {text!r} is a directory; give a file name")
        stem, suffix = split_name(local.name)
        return Destination(local.parent, None, None, "file://" if uri else "", stem, suffix)
    _refuse_traversal(text, parts.path, decode=True)
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc and not conn_id:
        conn_id = parts.netloc.rpartition("@")[0] or None
    parent_path, _, name = parts.path.rpartition("/")
    stem, suffix = split_name(name)
    return Destination(None, f"{scheme}://{netloc}{parent_path}", conn_id, "", stem, suffix)


def split_name(name: str) -> tuple[str, str]:
    """``("hero", ".png")``; a suffix that names no media kind stays part of the stem."""
    root, ext = os.path.splitext(name)
    if ext.lower() in KIND_OF_EXTENSION and root:
        return root, ext
    return name, ""


def filesystem_for(path: Any, conn_id: str | None) -> Any:
    """The fsspec filesystem behind an ObjectStoragePath (``inputs`` reads input files through it too).

    Airflow resolves the filesystem (and credentials) from ``conn_id``. Schemes Airflow has no
    provider for but fsspec knows (``memory://``) fall back to fsspec when no connection is given.
    """
    try:
        return path.fs
    except ValueError:
        if conn_id:
            raise
        import fsspec

        return fsspec.filesystem(path.protocol)


def filesystem(dest: Destination) -> tuple[Any, Any]:
    """The fsspec filesystem for a remote destination, and an ObjectStoragePath of it."""
    from airflow.sdk import ObjectStoragePath

    probe = ObjectStoragePath(f"{dest.remote_parent}/{dest.stem}", conn_id=dest.conn_id)
    return filesystem_for(probe, dest.conn_id), probe


def check_path_format(output_path: Any, expected: str | None) -> None:
    """Refuse, before anything is paid for, an ``output_path`` whose extension contradicts ``expected``.

    The verifier would refuse the file anyway, but only after the generation was billed.
    """
    kind = normalize_format(expected)
    suffix = os.path.splitext(urlsplit(str(output_path or "")).path)[1].lower()
    wanted = KIND_OF_EXTENSION.get(suffix)
    if kind and wanted and kind != wanted:
        raise SegmindValidationError(
            f"output_path ends in {suffix!r} but the payload asks for {expected}: "
            f"make the extension match the output format, or drop it to have the right one appended"
        )


def check_output_path(output_path: Any, expected: str | None, output_conn_id: str | None = None) -> None:
    """Refuse, before anything is paid for, an ``output_path`` the output could never be stored at."""
    check_path_format(output_path, expected)
    try:
        dest = destination(output_path, output_conn_id)
    except SegmindOutputError as exc:
        raise SegmindValidationError(exc.detail) from None
    if dest.remote_parent is None:
        return
    scheme = dest.remote_parent.partition("://")[0]
    if scheme in READ_ONLY_SCHEMES:
        raise SegmindValidationError(
            f"output_path {str(output_path)!r} is an {scheme} URL, which cannot be written to: "
            f"give a local path or an object storage URI (s3://, gs://, ...)"
        )
    try:
        filesystem(dest)
    except Exception as exc:
        raise SegmindValidationError(
            f"output_path {str(output_path)!r}: no storage is configured for {scheme}:// "
            f"({type(exc).__name__}: {exc}); install the provider for it and pass output_conn_id"
        ) from None
