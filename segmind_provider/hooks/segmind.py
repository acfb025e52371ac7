"""SegmindHook: the only code that speaks HTTP to Segmind (sync on workers, async in the triggerer).

It owns the connection (key, base URL, timeouts, retries, request budget), the
error mapping (``segmind_provider.exceptions``), the retry policy
(``hooks._retry``) and the per-key request budget (``hooks._budget``). The API
key travels only in the ``x-api-key`` header of requests to the API base URL:
API calls never follow redirects and downloads use a separate key-less session.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import requests
import urllib3.exceptions
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter

from segmind_provider import __version__
from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindBadRequestError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindInsufficientCreditsError,
    SegmindNotFoundError,
    SegmindOutputError,
    SegmindRateLimitError,
    SegmindRequestFailedError,
    SegmindServerError,
    SegmindSubmitUncertainError,
    SegmindTimeoutError,
    SegmindTransportError,
    SegmindValidationError,
)
from segmind_provider.hooks import _retry
from segmind_provider.hooks._budget import Priority, RequestBudget, budget_for_key

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

DEFAULT_BASE_URL = "https://api.segmind.com"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 300.0
CONNECT_TIMEOUT_CAP = 10.0
ASYNC_POOL_LIMIT = 50
"""Sockets per (event loop, base URL): thousands of triggers share this many connections."""
ASYNC_SETTINGS_TTL = 60.0
"""How long a triggerer's loop reuses a looked-up connection: edits apply within this time."""
DOWNLOAD_CHUNK = 64 * 1024
ENV_API_KEY = "SEGMIND_API_KEY"
ENV_BASE_URL = "SEGMIND_BASE_URL"
TEST_REQUEST_ID = "airflow-segmind-connection-test-00000000"
"""A request id that cannot exist: its status costs no credits, and 404 proves the key was accepted."""
USER_AGENT = f"airflow-provider-segmind/{__version__}"

_CONTENT_BLOCK = re.compile(
    r"nsfw|moderat|safety|unsafe|content[\s_-]*(?:policy|filter|block|violation)|\brai\b|"
    r"responsible[\s_-]*ai|inappropriate|flagged",
    re.IGNORECASE,
)
"""A FAILED job whose error matches this was blocked by a content/safety filter: no retry will pass it."""

__all__ = ["SegmindHook", "SyncRunResult", "aclose_async_sessions", "is_content_block"]


def is_content_block(reason: str | None) -> bool:
    """True when a FAILED reason names a moderation / NSFW / safety / content-policy / RAI block."""
    return bool(reason) and bool(_CONTENT_BLOCK.search(reason or ""))


@dataclass(frozen=True)
class SyncRunResult:
    """What ``POST /v1/{model}`` answered: media bytes, or JSON for non-media models."""

    content: bytes | None
    content_type: str
    json: Any | None


@dataclass(frozen=True)
class _Settings:
    """The resolved connection, cached per hook instance (a poll must not re-read the connection)."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float
    max_retries: int
    requests_per_minute: float | None
    run_timeout: float
    key_source: str = ""
    """Where the key came from, for an auth error that says what to fix."""


def _mask_sync(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDK
        try:
            from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]
    mask_secret(secret)


async def _mask_async(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # pragma: no cover - Airflow 3.2 has only the sync one
        _mask_sync(secret)
        return
    await amask_secret(secret)


def _scrub(text: str, secret: str | None) -> str:
    """Remove the key from any text that may become an exception message (servers sometimes echo it)."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text


def _normalise_base_url(host: str | None, port: int | None) -> str:
    """Host may be empty (default), bare (https), or a full URL with scheme, port and path."""
    host = (host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SegmindValidationError(
            f"Segmind base URL must be http(s)://host[:port], got scheme {parts.scheme!r}"
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = re.sub(r"/v[12]/?$", "", parts.path.rstrip("/"))
    return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")


def _number(extras: Mapping[str, Any], name: str, default: float | None, *, integer: bool = False) -> Any:
    value = extras.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = int(float(value)) if integer else float(value)
    except (TypeError, ValueError):
        raise SegmindValidationError(f"connection extra {name!r} must be a number, got {value!r}") from None
    if number < 0:
        raise SegmindValidationError(f"connection extra {name!r} must not be negative, got {value!r}")
    return number


def _settings_from(conn: Any | None, conn_id: str, environ: Mapping[str, str]) -> _Settings:
    """Connection (or the SEGMIND_API_KEY fallback) to settings; a missing key fails here, before any request."""
    if conn is None:
        key = environ.get(ENV_API_KEY, "").strip()
        if not key:
            raise SegmindAuthError(
                f"no Segmind API key: connection {conn_id!r} does not exist and {ENV_API_KEY} is not set"
            )
        base_url = _normalise_base_url(environ.get(ENV_BASE_URL), None)
        extras: Mapping[str, Any] = {}
        source = f"{ENV_API_KEY} (there is no connection {conn_id!r})"
    else:
        key = (conn.password or "").strip()
        if not key:
            raise SegmindAuthError(
                f"connection {conn_id!r} has no API key (set it as the password / 'API Key')"
            )
        base_url = _normalise_base_url(conn.host, conn.port)
        extras = conn.extra_dejson or {}
        source = f"connection {conn_id!r}"
    timeout = _number(extras, "timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
    rpm = _number(extras, "requests_per_minute", None) or None
    return _Settings(
        base_url=base_url,
        api_key=key,
        timeout=timeout,
        max_retries=_number(extras, "max_retries", _retry.DEFAULT_MAX_RETRIES, integer=True),
        requests_per_minute=rpm,
        run_timeout=_number(extras, "run_timeout", max(DEFAULT_RUN_TIMEOUT, timeout)) or DEFAULT_RUN_TIMEOUT,
        key_source=source,
    )


def _safe_url(url: str) -> str:
    """A URL for messages: no query string or credentials (signed media URLs carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _detail_from_body(body: bytes, secret: str | None) -> tuple[str, Any]:
    """The error detail (``error`` / ``detail`` / ``message``) and the parsed JSON, or a readable snippet."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        for name in ("error", "detail", "message"):
            value = data.get(name)
            if value:
                detail = value if isinstance(value, str) else json.dumps(value)[:500]
                return _scrub(detail, secret), data
    snippet = " ".join(text.split())[:200] or "(empty body)"
    if data is not None:
        return _scrub(f"answer without error detail: {snippet}", secret), data
    return _scrub(snippet, secret), None


def _error_for(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    request_id: str | None,
    key_source: str = "",
) -> SegmindError:
    """Map an HTTP answer to the exception family (the contract's table)."""
    detail, data = _detail_from_body(body, secret)
    if isinstance(data, dict) and isinstance(data.get("request_id"), str):
        request_id = request_id or data["request_id"]
    kwargs: dict[str, Any] = {"status_code": status, "request_id": request_id}
    if 300 <= status < 400:
        location = headers.get("Location") or ""
        target = _safe_url(location) if location else "(no Location)"
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
        if is_content_block(detail):
            return SegmindContentBlockedError(detail, **kwargs)
        return SegmindRequestFailedError(detail, **kwargs)
    retry_after = _retry.parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return SegmindRateLimitError(detail, retry_after=retry_after, **kwargs)
    if status >= 500:
        return SegmindServerError(detail, retry_after=retry_after, **kwargs)
    return SegmindError(detail, **kwargs)


_UNCERTAIN_NOTE = (
    "a job may exist on Segmind (and be billed), so the submit was NOT retried and Airflow's "
    "retries are skipped; check the usage history in the Segmind console, then clear the task "
    "to submit again if no job was made"
)


def _uncertain(what: str, exc: SegmindError) -> SegmindSubmitUncertainError:
    return SegmindSubmitUncertainError(
        f"{what}: {exc.detail}; {_UNCERTAIN_NOTE}", status_code=exc.status_code, request_id=exc.request_id
    )


def _requests_never_sent(exc: requests.RequestException) -> bool:
    """True only when requests/urllib3 failed to open the connection, so nothing reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.SSLError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return isinstance(
            reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
        )
    return False


def _aiohttp_never_sent(exc: BaseException) -> bool:
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    if connect_timeout is not None and isinstance(exc, connect_timeout):
        return True
    return isinstance(exc, aiohttp.ClientConnectorError)


def _transport_error(what: str, exc: BaseException, *, never_sent: bool) -> SegmindTransportError:
    message = " ".join(str(exc).split())[:300] or type(exc).__name__
    return SegmindTransportError(f"{what} failed: {type(exc).__name__}: {message}", maybe_sent=not never_sent)


class _LoopClient(NamedTuple):
    """The running loop's pooled session for one base URL, and the gate in front of its pool."""

    session: aiohttp.ClientSession
    gate: asyncio.Semaphore


# One pooled aiohttp session per (running loop, base URL). Keyed weakly by loop so a session is never
# used on another loop ("Event loop is closed" under `airflow dags test`, which runs each trigger in
# its own asyncio.run); a keeper task closes them when the loop cancels its tasks on shutdown.
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _LoopClient]] = (
    weakref.WeakKeyDictionary()
)
_KEEPERS: set[asyncio.Task[None]] = set()
# Resolved connection settings per (loop, conn id): a finished lookup (expiry, settings) or the one in flight.
_ASYNC_SETTINGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


async def _close_on_loop_shutdown(per_loop: dict[str, _LoopClient]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        clients = list(per_loop.values())
        per_loop.clear()
        for client in clients:
            await client.session.close()


def _async_client(base_url: str) -> _LoopClient:
    """The running loop's shared session (and its gate) for this base URL, created on first use.

    The gate admits as many requests as the pool has sockets. When thousands of polls fall due
    together the rest wait at the gate as one small future each, instead of each building its
    whole request first and queueing inside aiohttp: that pile-up of half-made requests is what
    filled the heap and set off the long garbage-collector passes (docs/benchmarks.md).
    """
    loop = asyncio.get_running_loop()
    per_loop = _ASYNC_CLIENTS.get(loop)
    if per_loop is None:
        per_loop = {}
        _ASYNC_CLIENTS[loop] = per_loop
        keeper = loop.create_task(_close_on_loop_shutdown(per_loop), name="segmind-session-keeper")
        _KEEPERS.add(keeper)
        keeper.add_done_callback(_KEEPERS.discard)
    client = per_loop.get(base_url)
    if client is None or client.session.closed:
        connector = aiohttp.TCPConnector(limit=ASYNC_POOL_LIMIT, limit_per_host=ASYNC_POOL_LIMIT)
        # trust_env off: with it aiohttp reads ~/.netrc in a thread on EVERY request (a thread hop per
        # poll). Proxies from the environment are still honoured, resolved once: see _env_proxy.
        session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False
        )
        client = per_loop[base_url] = _LoopClient(session, asyncio.Semaphore(ASYNC_POOL_LIMIT))
    return client


_PROXIES: dict[str, tuple[Any, Any]] = {}


def _env_proxy(base_url: str) -> tuple[Any, Any]:
    """HTTP(S)_PROXY / NO_PROXY for the API base URL, looked up once per process (like requests does)."""
    found = _PROXIES.get(base_url)
    if found is None:
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        try:
            found = get_env_proxy_for_url(URL(base_url))
        except LookupError:
            found = (None, None)
        _PROXIES[base_url] = found
    return found


async def aclose_async_sessions() -> None:
    """Close the running loop's shared sessions now (tests, benches, a clean shutdown)."""
    per_loop = _ASYNC_CLIENTS.pop(asyncio.get_running_loop(), None)
    for client in list((per_loop or {}).values()):
        await client.session.close()
    if per_loop is not None:
        per_loop.clear()


class SegmindHook(BaseHook):
    """Talk to Segmind's serverless API: submit, poll, fetch, download; sync and async.

    :param segmind_conn_id: the ``segmind`` connection (password = API key, host = optional base URL).
    """

    conn_name_attr = "segmind_conn_id"
    default_conn_name = "segmind_default"
    conn_type = "segmind"
    hook_name = "Segmind"

    def __init__(self, segmind_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.segmind_conn_id = segmind_conn_id
        self._settings: _Settings | None = None
        self._budget: RequestBudget | None = None
        self._session: requests.Session | None = None
        self._download_session: requests.Session | None = None
        self._headers: dict[str, str] = {}
        self._timeouts: tuple[float, float] = (CONNECT_TIMEOUT_CAP, DEFAULT_TIMEOUT)
        self._atimeout: aiohttp.ClientTimeout | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(segmind_conn_id={self.segmind_conn_id!r})"

    __str__ = __repr__

    # ---------------------------------------------------------------- connection

    def _adopt(self, settings: _Settings) -> _Settings:
        self._budget = budget_for_key(settings.api_key, settings.requests_per_minute)
        self._headers = {"x-api-key": settings.api_key, "Accept": "application/json"}
        self._timeouts = (min(CONNECT_TIMEOUT_CAP, settings.timeout), settings.timeout)
        self._atimeout = aiohttp.ClientTimeout(
            total=settings.timeout, sock_connect=min(CONNECT_TIMEOUT_CAP, settings.timeout)
        )
        self._settings = settings
        return settings

    def _resolve(self) -> _Settings:
        """Read the connection once (sync path; never call this on an event loop)."""
        if self._settings is not None:
            return self._settings
        try:
            conn = self.get_connection(self.segmind_conn_id)
        except AirflowNotFoundException:
            conn = None
        settings = _settings_from(conn, self.segmind_conn_id, os.environ)
        _mask_sync(settings.api_key)
        return self._adopt(settings)

    async def _aresolve(self) -> _Settings:
        """Read the connection without blocking the loop (Airflow 3's async connection API).

        Thousands of triggers share one lookup per connection id and event loop (single flight,
        reused for ``ASYNC_SETTINGS_TTL`` seconds): each lookup costs ~1 ms of the loop's CPU.
        """
        if self._settings is not None:
            return self._settings
        loop = asyncio.get_running_loop()
        per_loop = _ASYNC_SETTINGS.get(loop)
        if per_loop is None:
            per_loop = _ASYNC_SETTINGS[loop] = {}
        entry = per_loop.get(self.segmind_conn_id)
        if isinstance(entry, tuple) and entry[0] > time.monotonic():
            return self._adopt(entry[1])
        if not isinstance(entry, asyncio.Task):
            entry = loop.create_task(self._afetch_settings(per_loop))
            per_loop[self.segmind_conn_id] = entry
        return self._adopt(await asyncio.shield(entry))

    async def _afetch_settings(self, per_loop: dict[str, Any]) -> _Settings:
        try:
            try:
                conn = await self._aget_connection(self.segmind_conn_id)
            except AirflowNotFoundException:
                conn = None
            settings = _settings_from(conn, self.segmind_conn_id, os.environ)
            await _mask_async(settings.api_key)
        except BaseException:
            per_loop.pop(self.segmind_conn_id, None)
            raise
        per_loop[self.segmind_conn_id] = (time.monotonic() + ASYNC_SETTINGS_TTL, settings)
        return settings

    @classmethod
    async def _aget_connection(cls, conn_id: str) -> Any:
        aget = getattr(BaseHook, "aget_connection", None)
        if aget is not None:
            return await cls.aget_connection(conn_id)
        try:  # pragma: no cover - only on task SDKs without BaseHook.aget_connection
            from airflow.providers.common.compat.connection import get_async_connection
        except ImportError:  # pragma: no cover
            return await asyncio.to_thread(cls.get_connection, conn_id)
        return await get_async_connection(conn_id)  # pragma: no cover

    @property
    def base_url(self) -> str:
        """The API base URL this hook talks to (resolves the connection on first use)."""
        return self._resolve().base_url

    # ---------------------------------------------------------------- sync plumbing

    def _api_session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.verify = True
            session.max_redirects = 0
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=10, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._session = session
        return self._session

    def _send(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        submit: bool,
        payload: Any = None,
        request_id: str | None = None,
        accept_failed: bool = False,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """One attempt: budget, request (no redirects), map errors. Submits turn ambiguity into SubmitUncertain."""
        settings = self._resolve()
        assert self._budget is not None
        self._budget.acquire(priority)
        what = f"{method} {path}"
        try:
            response = self._api_session().request(
                method,
                settings.base_url + path,
                json=payload,
                headers=self._headers,
                timeout=timeout or self._timeouts,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            transport = _transport_error(what, exc, never_sent=_requests_never_sent(exc))
            if submit and transport.maybe_sent:
                raise _uncertain(what, transport) from exc
            raise transport from exc
        status = response.status_code
        if 200 <= status < 300 or (accept_failed and status == 422):
            return response
        error = self._api_error(settings, status, response.headers, response.content, request_id)
        if submit and status in (502, 504):
            raise _uncertain(what, error)
        raise error

    def _api_error(
        self,
        settings: _Settings,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str | None,
    ) -> SegmindError:
        """Map an API error answer; a 429 also pauses every hook sharing this key's budget."""
        error = _error_for(
            status,
            headers,
            body,
            secret=settings.api_key,
            request_id=request_id,
            key_source=settings.key_source,
        )
        if isinstance(error, SegmindRateLimitError) and self._budget is not None:
            self._budget.note_rate_limited(error.retry_after)
        return error

    def _json(self, body: bytes, what: str, *, submit: bool, request_id: str | None = None) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            secret = self._settings.api_key if self._settings else None
            snippet = _scrub(" ".join(body.decode("utf-8", "replace").split())[:200], secret)
            error = SegmindServerError(
                f"{what}: expected JSON, got: {snippet or '(empty body)'}",
                status_code=200,
                request_id=request_id,
            )
            if submit:
                raise _uncertain(what, error) from None
            raise error from None

    def _retries(self) -> int:
        return self._resolve().max_retries

    # ---------------------------------------------------------------- sync API

    def run(self, model: str, payload: Mapping[str, Any]) -> SyncRunResult:
        """``POST /v1/{model}``: the media bytes and content type, or the JSON for non-media models."""
        path = f"/v1/{_segment(model, 'model')}"
        settings = self._resolve()
        timeout = (min(CONNECT_TIMEOUT_CAP, settings.timeout), settings.run_timeout)

        def attempt() -> SyncRunResult:
            response = self._send(
                "POST", path, priority=Priority.SUBMIT, submit=True, payload=dict(payload), timeout=timeout
            )
            content_type = response.headers.get("Content-Type", "application/octet-stream")
            if "json" in content_type.lower():
                return SyncRunResult(
                    content=None,
                    content_type=content_type,
                    json=self._json(response.content, path, submit=True),
                )
            return SyncRunResult(content=response.content, content_type=content_type, json=None)

        return _retry.call(attempt, idempotent=False, max_retries=settings.max_retries)

    def submit(self, model: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/{model}``; retried only when the request surely did not start a job."""
        path = f"/v2/{_segment(model, 'model')}"

        def attempt() -> dict[str, Any]:
            response = self._send("POST", path, priority=Priority.SUBMIT, submit=True, payload=dict(payload))
            answer = self._json(response.content, f"POST {path}", submit=True)
            if not isinstance(answer, dict) or not answer.get("request_id"):
                raise _uncertain(
                    f"POST {path}", SegmindServerError("answer carries no request_id", status_code=200)
                )
            return answer

        return _retry.call(attempt, idempotent=False, max_retries=self._retries())

    def expect_poll(self, in_seconds: float) -> None:
        """Announce a status poll due in ``in_seconds`` to the key's budget, so submits leave it a token.

        No I/O, safe on an event loop. Before this hook's first request the key (and so its
        budget) is not known yet, and nothing is announced; without a limit it costs nothing.
        """
        if self._budget is not None:
            self._budget.expect(in_seconds)

    def get_status(self, request_id: str) -> dict[str, Any]:
        """``GET /v2/requests/{id}/status``; a FAILED answer (422) is returned, not raised."""
        path = f"/v2/requests/{_segment(request_id, 'request_id')}/status"

        def attempt() -> dict[str, Any]:
            response = self._send(
                "GET", path, priority=Priority.POLL, submit=False, request_id=request_id, accept_failed=True
            )
            return self._status_answer(response.status_code, response.content, request_id)

        return _retry.call(attempt, idempotent=True, max_retries=self._retries())

    def get_result(self, request_id: str) -> dict[str, Any]:
        """``GET /v2/requests/{id}``; a FAILED job raises SegmindRequestFailedError / SegmindContentBlockedError."""
        path = f"/v2/requests/{_segment(request_id, 'request_id')}"

        def attempt() -> dict[str, Any]:
            response = self._send("GET", path, priority=Priority.RESULT, submit=False, request_id=request_id)
            return self._result_answer(response.content, request_id)

        return _retry.call(attempt, idempotent=True, max_retries=self._retries())

    def wait(
        self, request_id: str, timeout: float = 600, poll_interval: float | None = None
    ) -> dict[str, Any]:
        """Poll the status until COMPLETED / FAILED, then return :meth:`get_result` (which raises on FAILED).

        ``poll_interval`` None means a backoff from 2 s growing by half each poll up to 10 s.
        """
        deadline = time.monotonic() + timeout
        interval = poll_interval if poll_interval is not None else 2.0
        while True:
            status = str(self.get_status(request_id).get("status", "")).upper()
            if status in ("COMPLETED", "FAILED"):
                return self.get_result(request_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SegmindTimeoutError(
                    f"still {status or 'unknown'} after {timeout:g} s; the job may still finish on Segmind: "
                    f"wait() again or get_result() this request id (results are kept 1 hour)",
                    request_id=request_id,
                )
            _retry.sleep(min(interval, remaining))
            if poll_interval is None:
                interval = min(interval * 1.5, 10.0)

    def get_credits(self) -> dict[str, Any]:
        """``GET /v1/get-user-credits``: the balance; spends no credits."""

        def attempt() -> dict[str, Any]:
            response = self._send("GET", "/v1/get-user-credits", priority=Priority.RESULT, submit=False)
            answer = self._json(response.content, "GET /v1/get-user-credits", submit=False)
            return answer if isinstance(answer, dict) else {"credits": answer}

        return _retry.call(attempt, idempotent=True, max_retries=self._retries())

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with one free call: the status of a request id that cannot exist (404 = key accepted)."""
        try:
            settings = self._resolve()
            path = f"/v2/requests/{TEST_REQUEST_ID}/status"
            _retry.call(
                lambda: self._send("GET", path, priority=Priority.RESULT, submit=False, accept_failed=True),
                idempotent=True,
                max_retries=min(1, settings.max_retries),
            )
        except SegmindNotFoundError:
            return True, f"Connection OK: Segmind at {settings.base_url} accepted the API key"
        except SegmindAuthError as exc:
            return False, f"bad key or no access: {exc}"
        except SegmindError as exc:
            return False, str(exc)
        return True, f"Connection OK: Segmind at {settings.base_url} answered with the API key"

    def download(self, url: str, fileobj: IO[bytes], *, max_bytes: int) -> str:
        """Stream an http(s) output URL into ``fileobj`` without the API key; returns its Content-Type.

        Transient failures restart the download from the file object's starting position.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SegmindOutputError(
                f"refusing to download {parts.scheme or 'a scheme-less'} URL; only http(s)"
            )
        try:
            settings: _Settings | None = self._resolve()
        except SegmindAuthError:
            settings = None
        timeout = settings.timeout if settings else DEFAULT_TIMEOUT
        retries = settings.max_retries if settings else _retry.DEFAULT_MAX_RETRIES
        seekable = bool(getattr(fileobj, "seekable", lambda: False)())
        start = fileobj.tell() if seekable else 0
        safe = _safe_url(url)
        if self._download_session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.verify = True
            self._download_session = session
        session = self._download_session

        def attempt() -> str:
            if seekable:
                fileobj.seek(start)
                fileobj.truncate()
            try:
                with session.get(
                    url,
                    stream=True,
                    timeout=(min(CONNECT_TIMEOUT_CAP, timeout), timeout),
                    allow_redirects=True,
                ) as response:
                    if response.status_code >= 400:
                        body = response.raw.read(4096, decode_content=True) or b""
                        raise _error_for(
                            response.status_code, response.headers, body, secret=None, request_id=None
                        )
                    length = response.headers.get("Content-Length")
                    if length and length.isdigit() and int(length) > max_bytes:
                        raise SegmindOutputError(f"{safe} is {length} bytes, over the limit of {max_bytes}")
                    written = 0
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise SegmindOutputError(f"{safe} is over the limit of {max_bytes} bytes")
                        fileobj.write(chunk)
                    return str(response.headers.get("Content-Type", "application/octet-stream"))
            except requests.RequestException as exc:
                raise _transport_error(f"GET {safe}", exc, never_sent=_requests_never_sent(exc)) from exc

        try:
            return _retry.call(attempt, idempotent=True, max_retries=retries if seekable else 0)
        except SegmindOutputError:
            raise
        except SegmindError as exc:
            raise SegmindOutputError(
                f"download of {safe} failed: {exc.detail}", status_code=exc.status_code
            ) from exc

    def close(self) -> None:
        """Close this hook's sync sessions (the async ones are shared per loop)."""
        for session in (self._session, self._download_session):
            if session is not None:
                session.close()
        self._session = None
        self._download_session = None

    # ---------------------------------------------------------------- shared answer handling

    def _status_answer(self, status_code: int, body: bytes, request_id: str) -> dict[str, Any]:
        if status_code == 422:
            detail, data = _detail_from_body(body, self._settings.api_key if self._settings else None)
            answer = dict(data) if isinstance(data, dict) else {}
            answer.setdefault("request_id", request_id)
            answer["status"] = "FAILED"
            answer.setdefault("error", detail)
            return answer
        return self._object(body, "status", request_id)

    def _object(self, body: bytes, what: str, request_id: str) -> dict[str, Any]:
        answer = self._json(body, f"GET {what} of {request_id}", submit=False, request_id=request_id)
        if not isinstance(answer, dict):
            raise SegmindServerError(
                f"{what} answer is not an object: {str(answer)[:200]}", request_id=request_id
            )
        return answer

    def _result_answer(self, body: bytes, request_id: str) -> dict[str, Any]:
        answer = self._object(body, "result", request_id)
        if str(answer.get("status", "")).upper() == "FAILED":
            reason = _scrub(
                str(answer.get("error") or answer.get("detail") or "job FAILED"),
                self._settings.api_key if self._settings else None,
            )
            cls = SegmindContentBlockedError if is_content_block(reason) else SegmindRequestFailedError
            raise cls(reason, request_id=request_id)
        return answer

    # ---------------------------------------------------------------- async API (triggerer)

    async def _asend(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        request_id: str | None = None,
        accept_failed: bool = False,
    ) -> tuple[int, bytes]:
        """One async attempt on the loop's shared session; reads only (the trigger never submits)."""
        settings = await self._aresolve()
        assert self._budget is not None
        await self._budget.aacquire(priority)
        client = _async_client(settings.base_url)
        what = f"{method} {path}"
        try:
            proxy, proxy_auth = _env_proxy(settings.base_url)
            async with (
                client.gate,
                client.session.request(
                    method,
                    settings.base_url + path,
                    headers=self._headers,
                    timeout=self._atimeout,
                    allow_redirects=False,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                ) as response,
            ):
                body = await response.read()
                status = response.status
                headers = response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(what, exc, never_sent=_aiohttp_never_sent(exc)) from exc
        if 200 <= status < 300 or (accept_failed and status == 422):
            return status, body
        raise self._api_error(settings, status, headers, body, request_id)

    async def aget_status(self, request_id: str) -> dict[str, Any]:
        """Async :meth:`get_status`: FAILED (422) is returned, not raised."""
        path = f"/v2/requests/{_segment(request_id, 'request_id')}/status"
        settings = await self._aresolve()

        async def attempt() -> dict[str, Any]:
            status, body = await self._asend(
                "GET", path, priority=Priority.POLL, request_id=request_id, accept_failed=True
            )
            return self._status_answer(status, body, request_id)

        return await _retry.acall(attempt, idempotent=True, max_retries=settings.max_retries)

    async def aget_result(self, request_id: str) -> dict[str, Any]:
        """Async :meth:`get_result`: FAILED raises SegmindRequestFailedError / SegmindContentBlockedError."""
        path = f"/v2/requests/{_segment(request_id, 'request_id')}"
        settings = await self._aresolve()

        async def attempt() -> dict[str, Any]:
            _, body = await self._asend("GET", path, priority=Priority.RESULT, request_id=request_id)
            return self._result_answer(body, request_id)

        return await _retry.acall(attempt, idempotent=True, max_retries=settings.max_retries)

    async def aget_credits(self) -> dict[str, Any]:
        """Async :meth:`get_credits`."""
        settings = await self._aresolve()

        async def attempt() -> dict[str, Any]:
            _, body = await self._asend("GET", "/v1/get-user-credits", priority=Priority.RESULT)
            answer = self._json(body, "GET /v1/get-user-credits", submit=False)
            return answer if isinstance(answer, dict) else {"credits": answer}

        return await _retry.acall(attempt, idempotent=True, max_retries=settings.max_retries)


def _segment(value: str, name: str) -> str:
    """A single, escaped path segment: ids and model names can never reshape the URL."""
    if not isinstance(value, str) or not value.strip():
        raise SegmindValidationError(f"{name} must be a non-empty string, got {value!r}")
    return quote(value.strip(), safe="")
