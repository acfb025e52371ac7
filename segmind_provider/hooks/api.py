"""SegmindApiHook: the only code that speaks HTTP to Segmind (sync on workers, async in the triggerer).

``SegmindHook`` (``hooks.segmind``) is this plus waiting on a request in the calling thread; the
triggers and the modules under them use this class, so nothing they import reaches the wait.

Beside it: ``connection`` (what the connection holds, masking), ``errors`` (answers to
exceptions), ``client`` (the per-loop async client), ``retry`` (what is tried again) and
``budget`` (requests per minute per key); their shared state lives in
``segmind_provider.runtime``. The API key travels only in the ``x-api-key`` header of
requests to the configured Segmind hosts: API calls never follow redirects, and downloads
use a separate key-less session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

import aiohttp
import requests
from airflow.sdk import BaseHook

from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)
from segmind_provider.hooks import account, errors, retry, workflows
from segmind_provider.hooks.budget import Priority
from segmind_provider.hooks.client import USER_AGENT
from segmind_provider.hooks.connection import DEFAULT_TIMEOUT, ConnectionSettings, path_segment
from segmind_provider.hooks.deadline import CallDeadline, DeadlineAdapter, deadline_error
from segmind_provider.hooks.download import CONNECT_TIMEOUT_CAP, download_to
from segmind_provider.runtime import process_state
from segmind_provider.status import RequestStatus, read_status

__all__ = ["SegmindApiHook", "SyncRunResult"]


TEST_REQUEST_ID = "airflow-segmind-connection-test-00000000"
"""A request id that cannot exist: its status costs no credits, and 404 proves the key was accepted."""

Host = Literal["api", "storage", "account"]


@dataclass(frozen=True)
class SyncRunResult:
    """What ``POST /v1/{model}`` answered: media bytes, or JSON for non-media models."""

    content: bytes | None
    content_type: str
    json: Any | None


def _base(settings: ConnectionSettings, host: Host) -> str:
    if host == "storage":
        return settings.storage_url
    if host == "account":
        return settings.account_url
    return settings.base_url


def _headers(settings: ConnectionSettings) -> dict[str, str]:
    return {"x-api-key": settings.api_key, "Accept": "application/json"}


class SegmindApiHook(BaseHook):
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
        self._session: requests.Session | None = None
        self._download_session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(segmind_conn_id={self.segmind_conn_id!r})"

    __str__ = __repr__

    # ---------------------------------------------------------------- connection

    def get_settings(self) -> ConnectionSettings:
        """The resolved connection (blocking; read at most once a minute per process)."""
        return process_state().settings(self.segmind_conn_id)

    async def aget_settings(self) -> ConnectionSettings:
        """The resolved connection, without blocking the event loop."""
        return await process_state().asettings(self.segmind_conn_id)

    @property
    def base_url(self) -> str:
        """The API base URL this hook talks to."""
        return self.get_settings().base_url

    # ---------------------------------------------------------------- sync plumbing

    def _api_session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.max_redirects = 0
            adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=10, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._session = session
        return self._session

    def _call(self, fn: Any, *, idempotent: bool, settings: ConnectionSettings) -> Any:
        return retry.call(
            fn, idempotent=idempotent, max_retries=settings.max_retries, sleep=process_state().sleep
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        submit: bool = False,
        host: Host = "api",
        payload: Any = None,
        params: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        accept_failed: bool = False,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """One attempt: budget, request (no redirects), map errors. Submits turn ambiguity into SubmitUncertain.

        The attempt, body included, ends within its connect plus read timeout (``hooks.deadline``).
        """
        settings = self.get_settings()
        process_state().budget(settings).acquire(priority)
        what = f"{method} {path}"
        timeout = timeout or (min(CONNECT_TIMEOUT_CAP, settings.timeout), settings.timeout)
        transport: SegmindTransportError | None = None
        with CallDeadline(sum(timeout)) as deadline:
            try:
                response = self._api_session().request(
                    method,
                    _base(settings, host) + path,
                    json=payload,
                    params=params,
                    headers=_headers(settings),
                    timeout=timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if errors.requests_refused_locally(exc):
                    raise errors.local_error(what, exc, settings.api_key) from None
                cause: BaseException | None = exc
                transport = errors.transport_error(
                    what, exc, never_sent=errors.requests_never_sent(exc), secret=settings.api_key
                )
            else:
                cause = None
        if deadline.expired:  # a body cut short by the deadline may even look complete
            transport = deadline_error(what, deadline.seconds)
        if transport is not None:
            if submit and transport.maybe_sent:
                raise errors.uncertain(what, transport) from cause
            raise transport from cause
        status = response.status_code
        if 200 <= status < 300 or (accept_failed and status == 422):
            return response
        error = self._api_error(settings, status, response.headers, response.content, request_id)
        if submit and status == 410:
            raise errors.retired(path.rsplit("/", 1)[-1], error)
        if submit and status in (502, 504):
            raise errors.uncertain(what, error)
        raise error

    def _api_error(
        self,
        settings: ConnectionSettings,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str | None,
    ) -> SegmindError:
        """Map an API error answer; a 429 also pauses every hook sharing this key's budget."""
        error = errors.error_for(
            status,
            headers,
            body,
            secret=settings.api_key,
            request_id=request_id,
            key_source=settings.key_source,
        )
        if isinstance(error, SegmindRateLimitError):
            process_state().budget(settings).note_rate_limited(error.retry_after)
        return error

    @staticmethod
    def _json(
        body: bytes,
        what: str,
        settings: ConnectionSettings,
        *,
        submit: bool = False,
        request_id: str | None = None,
    ) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            snippet = errors.scrub(" ".join(body.decode("utf-8", "replace").split())[:200], settings.api_key)
            error = SegmindServerError(
                f"{what}: expected JSON, got: {snippet or '(empty body)'}",
                status_code=200,
                request_id=request_id,
            )
            if submit:
                raise errors.uncertain(what, error) from None
            raise error from None

    def _object(
        self, body: bytes, what: str, settings: ConnectionSettings, request_id: str | None
    ) -> dict[str, Any]:
        answer = self._json(body, what, settings, request_id=request_id)
        if not isinstance(answer, dict):
            raise SegmindServerError(
                f"{what}: answer is not an object: {str(answer)[:200]}", request_id=request_id
            )
        return answer

    def _get(self, path: str, *, priority: Priority, host: Host = "api", **kwargs: Any) -> dict[str, Any]:
        """An idempotent GET answered with a JSON object, retried by the one policy."""
        settings = self.get_settings()

        def attempt() -> dict[str, Any]:
            response = self._send("GET", path, priority=priority, host=host, **kwargs)
            return self._object(response.content, f"GET {path}", settings, kwargs.get("request_id"))

        return self._call(attempt, idempotent=True, settings=settings)

    # ---------------------------------------------------------------- sync API

    def run(self, model: str, payload: Mapping[str, Any]) -> SyncRunResult:
        """``POST /v1/{model}``: the media bytes and content type, or the JSON for non-media models."""
        path = f"/v1/{path_segment(model, 'model')}"
        settings = self.get_settings()
        timeout = (min(CONNECT_TIMEOUT_CAP, settings.timeout), settings.run_timeout)

        def attempt() -> SyncRunResult:
            response = self._send(
                "POST", path, priority=Priority.SUBMIT, submit=True, payload=dict(payload), timeout=timeout
            )
            content_type = response.headers.get("Content-Type", "application/octet-stream")
            if "json" in content_type.lower():
                answer = self._json(response.content, path, settings, submit=True)
                return SyncRunResult(content=None, content_type=content_type, json=answer)
            return SyncRunResult(content=response.content, content_type=content_type, json=None)

        return self._call(attempt, idempotent=False, settings=settings)

    def submit(self, model: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/{model}``; retried only when the request surely did not start a job."""
        return self._post_job(f"/v2/{path_segment(model, 'model')}", payload)

    def _post_job(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A paid POST answered with a ``request_id``; retried only when it surely started nothing."""
        settings = self.get_settings()

        def attempt() -> dict[str, Any]:
            response = self._send("POST", path, priority=Priority.SUBMIT, submit=True, payload=dict(payload))
            answer = self._json(response.content, f"POST {path}", settings, submit=True)
            if not isinstance(answer, dict) or not answer.get("request_id"):
                missing = SegmindServerError("answer carries no request_id", status_code=200)
                raise errors.uncertain(f"POST {path}", missing)
            return answer

        return self._call(attempt, idempotent=False, settings=settings)

    def get_status(self, request_id: str) -> dict[str, Any]:
        """``GET /v2/requests/{id}/status``; a FAILED answer (422) is returned, not raised."""
        path = f"/v2/requests/{path_segment(request_id, 'request_id')}/status"
        settings = self.get_settings()

        def attempt() -> dict[str, Any]:
            response = self._send(
                "GET", path, priority=Priority.POLL, request_id=request_id, accept_failed=True
            )
            return self._status_answer(response.status_code, response.content, settings, request_id)

        return self._call(attempt, idempotent=True, settings=settings)

    def get_result(self, request_id: str) -> dict[str, Any]:
        """``GET /v2/requests/{id}``; a FAILED job raises SegmindRequestFailedError / SegmindContentBlockedError."""
        path = f"/v2/requests/{path_segment(request_id, 'request_id')}"
        answer = self._get(path, priority=Priority.RESULT, request_id=request_id)
        return self._result_answer(answer, request_id, self.get_settings())

    def submit_workflow(self, workflow_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /workflows/{id}``: start a PixelFlow workflow run (``hooks.workflows``); the answer
        carries ``request_id`` and ``poll_url``. Bad inputs raise before any call."""
        return self._post_job(workflows.submit_path(workflow_id), workflows.check_inputs(inputs))

    def get_workflow_status(self, request_id: str, poll_url: str | None = None) -> dict[str, Any]:
        """``GET poll_url`` of a workflow run: FAILED is returned, not raised; a COMPLETED ``output``
        string is decoded as JSON. ``poll_url`` off the API host is not followed (``hooks.workflows``)."""
        settings = self.get_settings()
        path = workflows.poll_path(settings.base_url, poll_url, request_id)

        def attempt() -> dict[str, Any]:
            response = self._send(
                "GET", path, priority=Priority.POLL, request_id=request_id, accept_failed=True
            )
            answer = self._status_answer(response.status_code, response.content, settings, request_id)
            return workflows.parse_poll_answer(answer)

        return self._call(attempt, idempotent=True, settings=settings)

    def get_credits(self) -> dict[str, Any]:
        """``GET /v1/get-user-credits``: the balance; spends no credits."""
        return self._get("/v1/get-user-credits", priority=Priority.RESULT)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with one free call: the status of a request id that cannot exist (404 = key accepted)."""
        try:
            settings = self.get_settings()
            path = f"/v2/requests/{TEST_REQUEST_ID}/status"
            retry.call(
                lambda: self._send("GET", path, priority=Priority.RESULT, accept_failed=True),
                idempotent=True,
                max_retries=min(1, settings.max_retries),
                sleep=process_state().sleep,
            )
        except SegmindNotFoundError:
            return True, f"Connection OK: Segmind at {settings.base_url} accepted the API key"
        except SegmindAuthError as exc:
            return False, f"bad key or no access: {exc}"
        except SegmindError as exc:
            return False, str(exc)
        return True, f"Connection OK: Segmind at {settings.base_url} answered with the API key"

    def download(self, url: str, fileobj: IO[bytes], *, max_bytes: int, deadline: float | None = None) -> str:
        """Stream an http(s) output URL into ``fileobj`` without the API key; returns its Content-Type.

        The one download policy (``hooks.download``): over ``max_bytes`` is refused, a body
        shorter than its Content-Length is retried, then refused; the whole download ends by a
        deadline that follows from its size (and by ``deadline``, epoch seconds, when given).
        """
        try:
            settings: ConnectionSettings | None = self.get_settings()
        except SegmindAuthError:
            settings = None
        if self._download_session is None:
            self._download_session = requests.Session()
            self._download_session.headers["User-Agent"] = USER_AGENT
            adapter = DeadlineAdapter()
            self._download_session.mount("https://", adapter)
            self._download_session.mount("http://", adapter)
        return download_to(
            self._download_session,
            url,
            fileobj,
            max_bytes=max_bytes,
            timeout=settings.timeout if settings else DEFAULT_TIMEOUT,
            max_retries=settings.max_retries if settings else retry.DEFAULT_MAX_RETRIES,
            sleep=process_state().sleep,
            deadline=deadline,
        )

    def upload(self, data: bytes, content_type: str) -> str:
        """``POST {storage_url}/upload-asset``: store an input file, return its persistent URL.

        A retry of a lost answer uploads the same bytes again, which costs nothing but a second
        stored copy.
        """
        body = account.upload_body(data, content_type)
        settings = self.get_settings()
        what = f"POST {account.UPLOAD_PATH}"

        def attempt() -> str:
            response = self._send(
                "POST", account.UPLOAD_PATH, priority=Priority.SUBMIT, host="storage", payload=body
            )
            return account.uploaded_url(self._json(response.content, what, settings))

        return self._call(attempt, idempotent=True, settings=settings)

    def history_page(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        page: int = 1,
        per_page: int = account.HISTORY_PAGE_SIZE,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One page of the key's own requests, newest first (in-flight ones included): its rows and
        its paging fields (``page``, ``per_page``, ``total``, ``total_pages``). Dates are ``YYYY-MM-DD``.

        Rows carry ``request_id``, ``model_name``, ``model_status``, ``request_body``,
        ``credits_deduction`` and timestamps; a request with several outputs may appear once per
        output. To read more than a page, use ``account.history.HistoryWindow``.
        """
        params = account.history_params(
            model=model, status=status, from_date=from_date, to_date=to_date, page=page, per_page=per_page
        )
        answer = self._get(account.HISTORY_PATH, priority=Priority.RESULT, host="account", params=params)
        return account.history_rows(answer), account.paging(answer)

    def request_history(self, **filters: Any) -> list[dict[str, Any]]:
        """The rows of one page of the key's own requests, newest first (filters as :meth:`history_page`)."""
        return self.history_page(**filters)[0]

    def get_request(self, request_id: str) -> dict[str, Any]:
        """One of the key's own requests from the account API (cost, inputs, status), any age."""
        path = account.request_path(request_id)
        answer = self._get(path, priority=Priority.RESULT, host="account", request_id=request_id)
        rows = account.history_rows(answer)
        return rows[0] if rows else answer

    def list_models(self) -> Any:
        """``GET {account_url}/inference-model-information/list``: Segmind's live model list, as answered."""
        settings = self.get_settings()
        what = f"GET {account.MODELS_PATH}"

        def attempt() -> Any:
            response = self._send("GET", account.MODELS_PATH, priority=Priority.RESULT, host="account")
            return self._json(response.content, what, settings)

        return self._call(attempt, idempotent=True, settings=settings)

    def close(self) -> None:
        """Close this hook's sync sessions (the async ones are shared per loop)."""
        for session in (self._session, self._download_session):
            if session is not None:
                session.close()
        self._session = None
        self._download_session = None

    # ---------------------------------------------------------------- shared answer handling

    def _status_answer(
        self, status_code: int, body: bytes, settings: ConnectionSettings, request_id: str
    ) -> dict[str, Any]:
        if status_code == 422:
            detail, data = errors.detail_from_body(body, settings.api_key)
            answer = dict(data) if isinstance(data, dict) else {}
            answer.setdefault("request_id", request_id)
            answer["status"] = RequestStatus.FAILED.value
            answer.setdefault("error", detail)
            return answer
        return self._object(body, f"GET status of {request_id}", settings, request_id)

    @staticmethod
    def _result_answer(
        answer: dict[str, Any], request_id: str, settings: ConnectionSettings
    ) -> dict[str, Any]:
        status = read_status(answer)
        if status is RequestStatus.FAILED:
            raise errors.failure_error(
                request_id, errors.scrub(errors.failure_reason(answer), settings.api_key)
            )
        reason = errors.reason_in(answer)
        if status is RequestStatus.COMPLETED and answer.get("output") is None and reason:
            # A 200 COMPLETED with no output and a reason beside it: the request failed, for that reason.
            raise errors.failure_error(request_id, errors.scrub(reason, settings.api_key))
        return answer

    # ---------------------------------------------------------------- async API (triggerer)

    async def _aget(
        self, path: str, *, priority: Priority, request_id: str | None = None, accept_failed: bool = False
    ) -> tuple[int, bytes]:
        """One async GET on the loop's shared session, retried by the one policy; reads only.

        Each attempt, body included, ends within the connection's timeout (aiohttp's total).
        """
        settings = await self.aget_settings()
        state = process_state()

        async def attempt() -> tuple[int, bytes]:
            await state.budget(settings).aacquire(priority)
            client = state.client(settings.base_url)
            try:
                async with (
                    client.gate,
                    client.session.get(
                        settings.base_url + path,
                        headers=_headers(settings),
                        timeout=aiohttp.ClientTimeout(
                            total=settings.timeout, sock_connect=min(CONNECT_TIMEOUT_CAP, settings.timeout)
                        ),
                        allow_redirects=False,
                        proxy=client.proxy,
                        proxy_auth=client.proxy_auth,
                    ) as response,
                ):
                    body = await response.read()
                    status, headers = response.status, response.headers
            except asyncio.TimeoutError as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):  # the connect timeout, not the call's
                    raise errors.transport_error(
                        f"GET {path}", exc, never_sent=errors.aiohttp_never_sent(exc)
                    ) from exc
                raise deadline_error(f"GET {path}", settings.timeout) from exc
            except aiohttp.ClientError as exc:
                raise errors.transport_error(
                    f"GET {path}", exc, never_sent=errors.aiohttp_never_sent(exc), secret=settings.api_key
                ) from exc
            if 200 <= status < 300 or (accept_failed and status == 422):
                return status, body
            raise self._api_error(settings, status, headers, body, request_id)

        return await retry.acall(
            attempt, idempotent=True, max_retries=settings.max_retries, asleep=state.asleep
        )

    async def aget_status(self, request_id: str) -> dict[str, Any]:
        """Async :meth:`get_status`: FAILED (422) is returned, not raised."""
        path = f"/v2/requests/{path_segment(request_id, 'request_id')}/status"
        status, body = await self._aget(
            path, priority=Priority.POLL, request_id=request_id, accept_failed=True
        )
        return self._status_answer(status, body, await self.aget_settings(), request_id)

    async def aget_result(self, request_id: str) -> dict[str, Any]:
        """Async :meth:`get_result`: FAILED raises SegmindRequestFailedError / SegmindContentBlockedError."""
        path = f"/v2/requests/{path_segment(request_id, 'request_id')}"
        _, body = await self._aget(path, priority=Priority.RESULT, request_id=request_id)
        settings = await self.aget_settings()
        return self._result_answer(
            self._object(body, f"GET {path}", settings, request_id), request_id, settings
        )

    async def apoll_result(self, request_id: str) -> dict[str, Any]:
        """``GET /v2/requests/{id}`` used as a poll: any state's answer, FAILED (422) returned, not raised.

        The emulator answers non-final states there with their status, saving the separate result
        fetch; the real service's answer before completion is undocumented, so callers fall back to
        :meth:`aget_status` on anything else (``triggers.batch``).
        """
        path = f"/v2/requests/{path_segment(request_id, 'request_id')}"
        status, body = await self._aget(
            path, priority=Priority.POLL, request_id=request_id, accept_failed=True
        )
        return self._status_answer(status, body, await self.aget_settings(), request_id)

    async def aget_workflow_status(self, request_id: str, poll_url: str | None = None) -> dict[str, Any]:
        """Async :meth:`get_workflow_status`."""
        settings = await self.aget_settings()
        path = workflows.poll_path(settings.base_url, poll_url, request_id)
        status, body = await self._aget(
            path, priority=Priority.POLL, request_id=request_id, accept_failed=True
        )
        return workflows.parse_poll_answer(self._status_answer(status, body, settings, request_id))
