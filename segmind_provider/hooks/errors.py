"""HTTP answers, transport failures and FAILED requests to the exception family (``segmind_provider.exceptions``).

Pure functions: the hook calls them with what it received. This is also the one place that reads
a FAILED request's reason and decides whether it was a content block (no retry can pass it) or an
ordinary failure. Every text that may become an
exception message passes through :func:`scrub`, so a server echoing the key never leaks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import requests
import urllib3.exceptions

from segmind_provider.catalog import nearest_slugs, successor_of
from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindBadRequestError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindInsufficientCreditsError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindRequestFailedError,
    SegmindServerError,
    SegmindSubmitUncertainError,
    SegmindTransportError,
    SegmindValidationError,
)
from segmind_provider.hooks.retry import parse_retry_after

__all__ = [
    "REASON_KEYS",
    "aiohttp_never_sent",
    "detail_from_body",
    "error_for",
    "failure_error",
    "failure_reason",
    "is_content_block",
    "local_error",
    "reason_in",
    "requests_never_sent",
    "requests_refused_locally",
    "retired",
    "safe_url",
    "scrub",
    "transport_error",
    "uncertain",
]

UNCERTAIN_NOTE = (
    "a job may exist on Segmind (and be billed), so the submit was NOT retried and Airflow's "
    "retries are skipped; check the usage history in the Segmind console, then clear the task "
    "to submit again if no job was made"
)


#: Where Segmind puts a failure's detail, in the order it is read.
REASON_KEYS = ("error", "detail", "message")

_CONTENT_BLOCK = re.compile(
    r"nsfw|moderat|safety|unsafe|content[\s_-]*(?:policy|filter|block|violation)|\brai\b|"
    r"responsible[\s_-]*ai|inappropriate|flagged",
    re.IGNORECASE,
)


def is_content_block(reason: str | None) -> bool:
    """True when a FAILED reason names a moderation / NSFW / safety / content-policy / RAI block."""
    return bool(reason) and bool(_CONTENT_BLOCK.search(reason or ""))


def reason_in(answer: Mapping[str, Any]) -> str | None:
    """The first non-empty of ``error``, ``detail``, ``message`` in an answer, or None."""
    for key in REASON_KEYS:
        value = answer.get(key)
        if value:
            return str(value)
    return None


def failure_reason(answer: Mapping[str, Any]) -> str:
    """The API's reason for a FAILED answer, or a sentence saying it gave none."""
    return reason_in(answer) or "the request ended FAILED without a reason"


def failure_error(request_id: str | None, reason: str | None, **kwargs: Any) -> SegmindRequestFailedError:
    """The exception for a FAILED request: a content block is final, other failures may be retried."""
    text = reason or "the request ended FAILED"
    cls = SegmindContentBlockedError if is_content_block(text) else SegmindRequestFailedError
    return cls(text, request_id=request_id, **kwargs)


def scrub(text: str, secret: str | None) -> str:
    """Remove the key from any text that may become an exception message (servers sometimes echo it),
    as written and as Python quotes it escaped (``repr``), which the secrets masker does not match."""
    if not secret:
        return text
    for form in (secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "replace"))[2:-1]):
        if form and form in text:
            text = text.replace(form, "***")
    return text


def safe_url(url: str) -> str:
    """A URL for messages: no query string or credentials (signed media URLs carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def detail_from_body(body: bytes, secret: str | None) -> tuple[str, Any]:
    """The error detail (``error`` / ``detail`` / ``message``) and the parsed JSON, or a readable snippet."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        value: Any = next((data[key] for key in REASON_KEYS if data.get(key)), None)
        if value is not None:
            detail = value if isinstance(value, str) else json.dumps(value)[:500]
            return scrub(detail, secret), data
    snippet = " ".join(text.split())[:200] or "(empty body)"
    if data is not None:
        return scrub(f"answer without error detail: {snippet}", secret), data
    return scrub(snippet, secret), None


def error_for(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    request_id: str | None,
    key_source: str = "",
) -> SegmindError:
    """Map an HTTP answer to the exception family (docs/architecture.md's table)."""
    detail, data = detail_from_body(body, secret)
    if isinstance(data, dict) and isinstance(data.get("request_id"), str):
        request_id = request_id or data["request_id"]
    kwargs: dict[str, Any] = {"status_code": status, "request_id": request_id}
    if 300 <= status < 400:
        location = headers.get("Location") or ""
        target = safe_url(location) if location else "(no Location)"
        return SegmindError(
            f"unexpected redirect to {target}; not followed so the API key is never sent elsewhere", **kwargs
        )
    if status == 400:
        return SegmindBadRequestError(detail, **kwargs)
    if status in (401, 403):
        hint = f" (check the API key of {key_source})" if key_source else ""
        return SegmindAuthError(detail + hint, **kwargs)
    if status == 404:
        return SegmindNotFoundError(detail, **kwargs)
    if status == 406:
        return SegmindInsufficientCreditsError(detail, **kwargs)
    if status == 422:
        return failure_error(request_id, detail, status_code=status)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return SegmindRateLimitError(detail, retry_after=retry_after, **kwargs)
    if status >= 500:
        return SegmindServerError(detail, retry_after=retry_after, **kwargs)
    return SegmindError(detail, **kwargs)


def retired(model: str, exc: SegmindError) -> SegmindModelRetiredError:
    """A submit answered ``410 Gone``: the model is retired, nothing was billed; name its successor."""
    successor = successor_of(model)
    if successor:
        hint = f"; the directory's successor is {successor!r}"
    else:
        close = [slug for slug in nearest_slugs(model) if slug != model]
        hint = f"; similar models: {', '.join(close)}" if close else ""
    return SegmindModelRetiredError(
        f"model {model!r} is retired (410 Gone: {exc.detail}); nothing was billed{hint}",
        status_code=exc.status_code,
    )


def uncertain(what: str, exc: SegmindError) -> SegmindSubmitUncertainError:
    """A submit whose outcome is unknown: the job may exist and be billed."""
    return SegmindSubmitUncertainError(
        f"{what}: {exc.detail}; {UNCERTAIN_NOTE}", status_code=exc.status_code, request_id=exc.request_id
    )


#: requests' errors raised while the request is being built, before any connection is opened.
_LOCAL_ERRORS = (
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidJSONError,
)


def requests_refused_locally(exc: requests.RequestException) -> bool:
    """True when requests refused to build the request (a bad header or URL): no byte left, and
    trying again cannot help."""
    return isinstance(exc, _LOCAL_ERRORS)


def requests_never_sent(exc: requests.RequestException) -> bool:
    """True only when nothing reached the server: the request was refused locally, or requests/urllib3
    failed to open the connection."""
    if requests_refused_locally(exc) or isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.SSLError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return isinstance(
            reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
        )
    return False


def aiohttp_never_sent(exc: BaseException) -> bool:
    """The aiohttp twin of :func:`requests_never_sent`."""
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    if connect_timeout is not None and isinstance(exc, connect_timeout):
        return True
    return isinstance(exc, aiohttp.ClientConnectorError)


def transport_error(
    what: str, exc: BaseException, *, never_sent: bool, secret: str | None = None
) -> SegmindTransportError:
    """Wrap a connection or read failure, remembering whether the request may have left."""
    message = scrub(" ".join(str(exc).split()), secret)[:300] or type(exc).__name__
    return SegmindTransportError(f"{what} failed: {type(exc).__name__}: {message}", maybe_sent=not never_sent)


def local_error(what: str, exc: requests.RequestException, secret: str | None) -> SegmindValidationError:
    """A request requests refused to build: nothing was sent (so nothing billed), and it is not retried."""
    message = scrub(" ".join(str(exc).split()), secret)[:300] or type(exc).__name__
    return SegmindValidationError(f"{what} was not sent: {type(exc).__name__}: {message}")
