"""Async twins: same semantics as the sync path, one shared aiohttp session per (loop, base URL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from pytest_httpserver import HTTPServer
from segmind_hook_testlib import KEY, closed_port

from segmind_provider.exceptions import (
    SegmindAuthError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindNotFoundError,
    SegmindRequestFailedError,
    SegmindServerError,
    SegmindTransportError,
)
from segmind_provider.hooks.client import new_loop_client
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.runtime import POOL_LIMIT, process_state, reset_process_state


async def aclose_async_sessions() -> None:
    await process_state().aclose_clients()


STATUS = "/v2/requests/req-1/status"
RESULT = "/v2/requests/req-1"


@pytest.fixture(autouse=True)
def _no_sync_connection_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The async path must never block the triggerer's loop with the sync connection lookup."""
    original = BaseHook.get_connection.__func__  # type: ignore[attr-defined]

    def guarded(cls: type[BaseHook], conn_id: str) -> object:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return original(cls, conn_id)  # a worker thread, off the loop: allowed
        raise AssertionError("sync get_connection called on the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded))


async def test_aget_status_and_result(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(STATUS, headers={"x-api-key": KEY}).respond_with_json({"status": "COMPLETED"})
    httpserver.expect_request(RESULT, headers={"x-api-key": KEY}).respond_with_json(
        {
            "status": "COMPLETED",
            "output": "https://media.example/x.webp",
            "metrics": {"inference_time": 13.06},
        }
    )
    hook = SegmindHook(conn_id)
    assert await hook.aget_status("req-1") == {"status": "COMPLETED"}
    assert (await hook.aget_result("req-1"))["metrics"]["inference_time"] == 13.06
    await aclose_async_sessions()


async def test_afailed_status_returned_and_result_raised(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(STATUS).respond_with_json(
        {"status": "FAILED", "error": "NSFW detected"}, status=422
    )
    httpserver.expect_request(RESULT).respond_with_json(
        {"status": "FAILED", "error": "NSFW detected"}, status=422
    )
    hook = SegmindHook(conn_id)
    assert (await hook.aget_status("req-1"))["status"] == "FAILED"
    with pytest.raises(SegmindContentBlockedError) as info:
        await hook.aget_result("req-1")
    assert isinstance(info.value, AirflowFailException)
    await aclose_async_sessions()


async def test_afailed_plain(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json(
        {"status": "FAILED", "error": "worker died"}, status=422
    )
    with pytest.raises(SegmindRequestFailedError) as info:
        await SegmindHook(conn_id).aget_result("req-1")
    assert type(info.value) is SegmindRequestFailedError
    await aclose_async_sessions()


@pytest.mark.parametrize(("status", "exc_type"), [(401, SegmindAuthError), (404, SegmindNotFoundError)])
async def test_aerrors(
    httpserver: HTTPServer, conn_id: str, status: int, exc_type: type[SegmindError]
) -> None:
    httpserver.expect_request(STATUS).respond_with_data("<html>nope</html>", status=status)
    with pytest.raises(exc_type) as info:
        await SegmindHook(conn_id).aget_status("req-1")
    assert str(info.value).startswith(f"HTTP {status} from Segmind: <html>nope</html>")
    assert len(httpserver.log) == 1
    await aclose_async_sessions()


async def test_aretries_with_retry_after(httpserver: HTTPServer, conn_id: str, waits: list[float]) -> None:
    httpserver.expect_ordered_request(STATUS).respond_with_json({}, status=429, headers={"Retry-After": "4"})
    httpserver.expect_ordered_request(STATUS).respond_with_data("bad gateway", status=502)
    httpserver.expect_ordered_request(STATUS).respond_with_json({"status": "PROCESSING"})
    assert (await SegmindHook(conn_id).aget_status("req-1"))["status"] == "PROCESSING"
    assert waits[0] == 4.0 and 0 <= waits[1] <= 2.0 and len(waits) == 2
    await aclose_async_sessions()


async def test_agives_up(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, waits: list[float]
) -> None:
    httpserver.expect_request(STATUS).respond_with_json({"error": "down"}, status=500)
    with pytest.raises(SegmindServerError):
        await SegmindHook(make_conn(base_url, max_retries="3")).aget_status("req-1")
    assert len(waits) == 3 and len(httpserver.log) == 4
    await aclose_async_sessions()


async def test_atransport_error_wrapped(make_conn: Callable[..., str], waits: list[float]) -> None:
    conn_id = make_conn(f"http://127.0.0.1:{closed_port()}", max_retries=1)
    with pytest.raises(SegmindTransportError) as info:
        await SegmindHook(conn_id).aget_status("req-1")
    assert info.value.maybe_sent is False
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
    await aclose_async_sessions()


async def test_aredirect_not_followed(httpserver: HTTPServer, conn_id: str, other_server: HTTPServer) -> None:
    httpserver.expect_request(STATUS).respond_with_data(
        "", status=307, headers={"Location": other_server.url_for(STATUS)}
    )
    other_server.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    with pytest.raises(SegmindError, match="redirect"):
        await SegmindHook(conn_id).aget_status("req-1")
    assert other_server.log == []
    await aclose_async_sessions()


async def test_amissing_key(httpserver: HTTPServer) -> None:
    with pytest.raises(SegmindAuthError):
        await SegmindHook("segmind_test").aget_status("req-1")
    assert httpserver.log == []


async def test_aenv_fallback(httpserver: HTTPServer, base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setenv("SEGMIND_BASE_URL", base_url)
    httpserver.expect_request(STATUS, headers={"x-api-key": KEY}).respond_with_json({"status": "QUEUED"})
    assert (await SegmindHook("segmind_test").aget_status("req-1"))["status"] == "QUEUED"
    await aclose_async_sessions()


async def test_one_session_per_loop_shared_across_hooks(
    httpserver: HTTPServer, conn_id: str, base_url: str
) -> None:
    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    first, second = SegmindHook(conn_id), SegmindHook(conn_id)
    await asyncio.gather(*(h.aget_status("req-1") for h in (first, second, first, second)))
    session = process_state().client(base_url).session
    assert isinstance(session.connector, aiohttp.TCPConnector)
    assert session.connector.limit == POOL_LIMIT
    await first.aget_status("req-1")
    assert process_state().client(base_url).session is session
    await aclose_async_sessions()
    assert session.closed


async def test_requests_past_the_pool_wait_at_the_gate(
    httpserver: HTTPServer, conn_id: str, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls beyond the pool's sockets wait before building a request, never more in flight than sockets."""
    reset_process_state(pool_limit=2)
    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    hook = SegmindHook(conn_id)
    await hook.aget_status("req-1")
    client = process_state().client(base_url)
    built = 0
    real_request = client.session.get

    def counting_request(*args: Any, **kwargs: Any) -> Any:
        nonlocal built
        built += 1
        # Requests are only built once the gate let them through: never more than the pool at once.
        assert built - finished <= 2
        return real_request(*args, **kwargs)

    finished = 0

    async def poll() -> None:
        nonlocal finished
        await hook.aget_status("req-1")
        finished += 1

    monkeypatch.setattr(client.session, "get", counting_request)
    await asyncio.gather(*(poll() for _ in range(10)))
    assert built == 10 and finished == 10
    await aclose_async_sessions()


def test_new_loop_gets_new_session_and_old_one_is_closed(
    httpserver: HTTPServer, conn_id: str, base_url: str
) -> None:
    """`airflow dags test` runs each trigger in its own asyncio.run: a session must never cross loops."""
    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    seen: list[aiohttp.ClientSession] = []

    async def poll() -> None:
        await SegmindHook(conn_id).aget_status("req-1")
        seen.append(process_state().client(base_url).session)

    asyncio.run(poll())
    asyncio.run(poll())
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert seen[0].closed and seen[1].closed  # closed by the keeper when asyncio.run cancelled its tasks


async def test_budget_shared_by_async_hooks(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str
) -> None:
    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    one = SegmindHook(make_conn(base_url, requests_per_minute=600))
    two = SegmindHook(make_conn(base_url))
    await one.aget_status("req-1")
    await two.aget_status("req-1")
    budget = process_state().budget(await one.aget_settings())
    assert budget is process_state().budget(await two.aget_settings())
    assert budget.granted == 2
    await aclose_async_sessions()


def test_connection_looked_up_once_a_minute(
    httpserver: HTTPServer, conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of triggers share one (async) connection lookup, for all loops, until it is a minute old."""
    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    offset = [0.0]
    reset_process_state(clock=lambda: offset[0])
    lookups: list[str] = []
    original = BaseHook.aget_connection.__func__  # type: ignore[attr-defined]

    async def counting(cls: type[BaseHook], conn_id: str) -> object:
        lookups.append(conn_id)
        return await original(cls, conn_id)

    monkeypatch.setattr(BaseHook, "aget_connection", classmethod(counting))

    async def many() -> None:
        hooks = [SegmindHook(conn_id) for _ in range(20)]
        await asyncio.gather(*(h.aget_status("req-1") for h in hooks))
        await SegmindHook(conn_id).aget_status("req-1")

    asyncio.run(many())
    assert lookups == [conn_id]
    offset[0] += 59.0
    asyncio.run(many())
    assert lookups == [conn_id]
    offset[0] += 2.0
    asyncio.run(many())
    assert lookups == [conn_id, conn_id]


def test_failed_lookup_is_not_cached(
    httpserver: HTTPServer, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def twice() -> None:
        with pytest.raises(SegmindAuthError):
            await SegmindHook("segmind_test").aget_status("req-1")
        monkeypatch.setenv("SEGMIND_API_KEY", KEY)
        monkeypatch.setenv("SEGMIND_BASE_URL", base_url)
        assert (await SegmindHook("segmind_test").aget_status("req-1"))["status"] == "QUEUED"

    httpserver.expect_request(STATUS).respond_with_json({"status": "QUEUED"})
    asyncio.run(twice())


def test_env_proxy_taken_when_the_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    async def proxy_of_new_client() -> object:
        client = new_loop_client("https://api.segmind.com", 1)
        await client.session.close()
        return client.proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert str(asyncio.run(proxy_of_new_client())) == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "api.segmind.com")
    assert asyncio.run(proxy_of_new_client()) is None


async def test_akey_masked_and_scrubbed_from_errors(
    httpserver: HTTPServer, conn_id: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import airflow.sdk.log

    masked: list[object] = []

    async def amask(secret: object, name: object = None) -> None:
        masked.append(secret)

    monkeypatch.setattr(airflow.sdk.log, "amask_secret", amask, raising=False)  # Airflow 3.2 lacks it
    caplog.set_level("DEBUG")
    httpserver.expect_request(STATUS).respond_with_json({"error": f"bad key {KEY}"}, status=401)
    httpserver.expect_request(RESULT).respond_with_json({"status": "FAILED", "error": f"{KEY} nsfw"})
    hook = SegmindHook(conn_id)
    errors = []
    for call in (hook.aget_status, hook.aget_result):
        with pytest.raises(SegmindError) as info:
            await call("req-1")
        errors.append(info.value)
    assert masked == [KEY]
    for text in [caplog.text, repr(hook), *(str(e) for e in errors), *(repr(e) for e in errors)]:
        assert KEY not in text
    await aclose_async_sessions()
