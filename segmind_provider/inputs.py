"""Input files for a Segmind request: read, checked, then uploaded or inlined the way the model takes them.

``SegmindOperator(input_files={field: path_or_uri, ...})`` ends here. Reading and checking happen
before any paid call (a missing, unreadable, oversized or non-media file is refused with the field
and the path named, every problem at once); filling happens after the payload passed validation:
a field the catalog marks ``encoding: "base64"`` gets the file inline, any other file field (and any
field of a model the catalog does not know) gets a Segmind storage URL from ``upload`` (the hook's
``SegmindHook.upload``: this module makes no HTTP call of its own). ``http(s)`` values pass through
untouched and are never fetched. Within one call of :meth:`InputFiles.fill` the same bytes are
uploaded once, and :meth:`InputFiles.identity` names each file by its content's digest, so the
pay-once fingerprint does not change when a retry's upload gets a new URL.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segmind_provider.catalog import get_model
from segmind_provider.destination import filesystem_for
from segmind_provider.exceptions import SegmindError, SegmindValidationError
from segmind_provider.media import MEDIA_TYPES, decode_problem, redact_url, sniff_format

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "FieldInput",
    "InputFile",
    "InputFiles",
    "open_source",
    "read_input_files",
]

DEFAULT_MAX_INPUT_BYTES = 25 * 1024 * 1024
"""Largest input file read (25 MiB): a photo or a short clip fits, a mistaken multi-GB path does not.

Segmind documents no limit; its storage takes the file as base64 inside a JSON body, a third larger."""

Upload = Callable[[bytes, str], str]
"""``(data, content_type) -> stored URL``: ``SegmindHook.upload``."""

_KNOWN_KINDS = ", ".join(sorted(MEDIA_TYPES))


@dataclass(frozen=True)
class InputFile:
    """One file read for a field: its bytes, the media type sniffed from them and their digest."""

    source: str
    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class FieldInput:
    """What fills one payload field: files read and ``http(s)`` URLs passed through, in order."""

    field: str
    items: tuple[InputFile | str, ...]
    many: bool
    encoding: str


@dataclass(frozen=True)
class InputFiles:
    """The checked input files of one request, ready to fill its payload."""

    fields: tuple[FieldInput, ...] = ()

    @property
    def names(self) -> list[str]:
        """The payload fields these files fill (for ``validate_payload(filled_later=...)``)."""
        return [f.field for f in self.fields]

    def fill(self, payload: Mapping[str, Any], upload: Upload) -> dict[str, Any]:
        """The payload to send: each field set to stored URLs (uploaded once per content) or base64."""
        stored: dict[str, str] = {}

        def value(item: InputFile | str, encoding: str) -> str:
            if isinstance(item, str):
                return item
            if encoding == "base64":
                return base64.b64encode(item.data).decode("ascii")
            if item.digest not in stored:
                stored[item.digest] = upload(item.data, item.media_type)
            return stored[item.digest]

        return self._with(payload, value)

    def identity(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload as the user meant it, files named by content: what the pay-once fingerprint hashes."""
        return self._with(payload, lambda item, _: item if isinstance(item, str) else f"sha256:{item.digest}")

    def _with(
        self, payload: Mapping[str, Any], value: Callable[[InputFile | str, str], str]
    ) -> dict[str, Any]:
        result = dict(payload)
        for entry in self.fields:
            values = [value(item, entry.encoding) for item in entry.items]
            result[entry.field] = values if entry.many else values[0]
        return result

    def describe(self) -> list[str]:
        """One line per input, for the task log (sizes and types, never the data)."""
        lines = []
        for entry in self.fields:
            for item in entry.items:
                if isinstance(item, str):
                    lines.append(f"{entry.field} <- {redact_url(item)} (URL, passed through)")
                else:
                    how = (
                        "sent inline as base64"
                        if entry.encoding == "base64"
                        else "to upload to Segmind storage"
                    )
                    lines.append(
                        f"{entry.field} <- {item.source} ({item.media_type}, {len(item.data)} bytes, {how})"
                    )
        return lines


class _Problems:
    """Every problem found, so one error lists them all; ``final`` is False for a possibly passing one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.final = True

    def add(self, where: str, source: Any, text: str, *, final: bool = True) -> None:
        shown = redact_url(source) if isinstance(source, str) else source
        self.lines.append(f"- input_files{where}: {shown!s} {text}")
        self.final = self.final and final

    def raise_any(self, model: str) -> None:
        if not self.lines:
            return
        noun = "problem" if len(self.lines) == 1 else "problems"
        message = (
            f"Input files for model {model!r} refused before any request ({len(self.lines)} {noun}):\n"
            + "\n".join(self.lines)
        )
        raise SegmindValidationError(message) if self.final else SegmindError(message)


def read_input_files(
    model: str,
    input_files: Mapping[str, Any] | None,
    *,
    payload: Mapping[str, Any],
    input_conn_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> InputFiles:
    """Read and check every input file (no HTTP to Segmind); raise naming each field and path at fault.

    Raises SegmindValidationError (no retry can help: missing, unreadable, empty, too large, not the
    media the field takes, a field also in ``payload``), or SegmindError when a remote store failed
    in a way a retry may fix.
    """
    if not input_files:
        return InputFiles()
    if not isinstance(input_files, Mapping):
        raise SegmindValidationError(
            f"input_files must map payload field names to paths or URIs, got {type(input_files).__name__}"
        )
    entry = get_model(model)
    media_fields = entry.media_fields() if entry is not None else {}
    problems = _Problems()
    fields: list[FieldInput] = []
    for name, given in input_files.items():
        field = str(name)
        param = media_fields.get(field)
        where = f"[{field!r}]"
        sources = list(given) if isinstance(given, (list, tuple)) else [given]
        many = param.type == "array" if param is not None else isinstance(given, (list, tuple))
        if field in payload:
            problems.add(where, given, "is also given in the payload; keep one of the two")
        elif not sources or (not many and len(sources) > 1):
            problems.add(where, sources, f"must be one file for this field, got {len(sources)}")
        elif param is not None and param.max_items is not None and len(sources) > param.max_items:
            problems.add(
                where, sources, f"lists {len(sources)} files, more than the {param.max_items} allowed"
            )
        else:
            media = param.media if param is not None else None
            items = [
                _read(f"{where}[{i}]" if many else where, source, media, input_conn_id, max_bytes, problems)
                for i, source in enumerate(sources)
            ]
            encoding = (param.encoding if param is not None else None) or "url"
            fields.append(FieldInput(field, tuple(i for i in items if i is not None), many, encoding))
    problems.raise_any(model)
    return InputFiles(tuple(fields))


def _read(
    where: str, source: Any, media: str | None, conn_id: str | None, max_bytes: int, problems: _Problems
) -> InputFile | str | None:
    """One file's bytes and media type, or None after recording why not."""
    if isinstance(source, str) and urlsplit(source).scheme.lower() in ("http", "https"):
        return source
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        problems.add(where, repr(source), "is not a path or URI")
        return None
    try:
        with open_source(source, conn_id) as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        problems.add(where, source, "does not exist")
        return None
    except IsADirectoryError:
        problems.add(where, source, "is a directory, not a file")
        return None
    except PermissionError:
        problems.add(where, source, "cannot be read (permission denied)")
        return None
    except Exception as exc:  # fsspec back ends raise their own types (credentials, network, ...)
        problems.add(where, source, f"cannot be read: {type(exc).__name__}: {exc}", final=False)
        return None
    return _checked(where, redact_url(str(source)), data, media, max_bytes, problems)


def open_source(source: str | os.PathLike[str], conn_id: str | None) -> Any:
    """A binary file handle: plain files directly, any other scheme through ObjectStoragePath."""
    if hasattr(source, "protocol"):  # an ObjectStoragePath given as is: it carries its own connection
        own = getattr(source, "conn_id", None)
        return filesystem_for(source, own).open(source.path, "rb")  # type: ignore[union-attr]
    text = os.fspath(source)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a plain path (a Windows drive letter is no scheme)
        return open(Path(text).expanduser(), "rb")
    if scheme == "file" and parts.netloc in ("", "localhost"):
        return open(unquote(parts.path), "rb")
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(text, conn_id=conn_id)
    return filesystem_for(path, conn_id).open(path.path, "rb")


def _checked(
    where: str, source: str, data: bytes, media: str | None, max_bytes: int, problems: _Problems
) -> InputFile | None:
    if len(data) > max_bytes:
        problems.add(where, source, f"is larger than the input cap of {max_bytes} bytes")
        return None
    if not data:
        problems.add(where, source, "is empty")
        return None
    kind = sniff_format(data[:16])
    if kind is None:
        what = f"an {media}" if media == "image" else f"a {media} file" if media else "a media file"
        problems.add(where, source, f"is not {what}: its bytes match none of {_KNOWN_KINDS}")
        return None
    media_type = MEDIA_TYPES[kind]
    if media is not None and not media_type.startswith(media + "/"):
        problems.add(where, source, f"is {media_type}, but the field takes {media}")
        return None
    broken = decode_problem(data, kind)
    if broken is not None:
        problems.add(where, source, f"is a damaged {kind} image ({broken})")
        return None
    return InputFile(source, data, media_type, hashlib.sha256(data).hexdigest())
