"""The one download policy for outputs: key-less, capped, complete, retried from the start.

Segmind's media host is not Segmind's API: the key is never sent there, and redirects are
followed. A body over the cap (announced or received) is refused; a body shorter than its
Content-Length is a transport error (urllib3 checks the length) and is downloaded again.
The whole download, retries included, ends by a deadline: the timeout plus its size (announced,
else the cap) at MIN_DOWNLOAD_RATE, and never after the caller's own deadline (the task's time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO
from urllib.parse import urlsplit

import requests

from segmind_provider.exceptions import SegmindError, SegmindOutputError
from segmind_provider.hooks import errors, retry
from segmind_provider.hooks.deadline import CallDeadline

__all__ = ["CONNECT_TIMEOUT_CAP", "DOWNLOAD_CHUNK", "MIN_DOWNLOAD_RATE", "download_to"]

CONNECT_TIMEOUT_CAP = 10.0
DOWNLOAD_CHUNK = 64 * 1024
MIN_DOWNLOAD_RATE = 64 * 1024
"""Bytes per second below which a download is abandoned (a 10 MB video gets 160 s on top of the timeout)."""


def download_to(
    session: requests.Session,
    url: str,
    fileobj: IO[bytes],
    *,
    max_bytes: int,
    timeout: float,
    max_retries: int,
    sleep: Callable[[float], None],
    deadline: float | None = None,
) -> str:
    """Stream ``url`` into ``fileobj`` and return its Content-Type; SegmindOutputError on failure.

    ``deadline`` (epoch seconds): the caller's own end; the download ends by it too.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SegmindOutputError(f"refusing to download {parts.scheme or 'a scheme-less'} URL; only http(s)")
    seekable = bool(getattr(fileobj, "seekable", lambda: False)())
    start = fileobj.tell() if seekable else 0
    safe = errors.safe_url(url)
    timeouts = (min(CONNECT_TIMEOUT_CAP, timeout), timeout)
    began = time.monotonic()
    allowed = sum(timeouts) + max_bytes / MIN_DOWNLOAD_RATE
    if deadline is not None:
        allowed = min(allowed, deadline - time.time())

    def attempt() -> str:
        if seekable:
            fileobj.seek(start)
            fileobj.truncate()
        with CallDeadline(allowed - (time.monotonic() - began)) as cut:
            try:
                content_type = receive(cut)
            except requests.RequestException as exc:
                if not cut.expired:
                    raise errors.transport_error(
                        f"GET {safe}", exc, never_sent=errors.requests_never_sent(exc)
                    ) from exc
        if cut.expired:  # final, not retried: a retry would wait for the same slow server
            raise SegmindOutputError(
                f"download of {safe} did not finish within its deadline of {cut.seconds:.1f} s "
                f"(slower than {MIN_DOWNLOAD_RATE // 1024} KiB/s, or past the task's time)"
            )
        return content_type

    def receive(cut: CallDeadline) -> str:
        with session.get(url, stream=True, timeout=timeouts, allow_redirects=True) as response:
            if response.status_code >= 400:
                body = response.raw.read(4096, decode_content=True) or b""
                raise errors.error_for(
                    response.status_code, response.headers, body, secret=None, request_id=None
                )
            length = response.headers.get("Content-Length")
            if length and length.isdigit():
                if int(length) > max_bytes:
                    raise SegmindOutputError(f"{safe} is {length} bytes, over the limit of {max_bytes}")
                cut.shorten(timeout + int(length) / MIN_DOWNLOAD_RATE)
            written = 0
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise SegmindOutputError(f"{safe} is over the limit of {max_bytes} bytes")
                fileobj.write(chunk)
            return str(response.headers.get("Content-Type", "application/octet-stream"))

    try:
        return retry.call(attempt, idempotent=True, max_retries=max_retries if seekable else 0, sleep=sleep)
    except SegmindOutputError:
        raise
    except SegmindError as exc:
        raise SegmindOutputError(
            f"download of {safe} failed: {exc.detail}", status_code=exc.status_code
        ) from exc
