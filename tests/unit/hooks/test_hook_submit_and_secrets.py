"""The submit-retry rule, redirects, and keeping the API key where it belongs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from airflow.sdk.exceptions import AirflowFailException
from pytest_httpserver import HTTPServer
from segmind_hook_testlib import KEY, RawServer, closed_port
from werkzeug import Request, Response

from segmind_provider.exceptions import (
    SegmindError,
    SegmindRateLimitError,
    SegmindServerError,
    SegmindSubmitUncertainError,
    SegmindTransportError,
)
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.runtime import process_state

SUBMIT = "/v2/flux-1.1-pro"
PAYLOAD = {"prompt": "a lighthouse"}
QUEUED = {"request_id": "r1", "status": "QUEUED", "status_url": "s", "response_url": "r"}


def _submit(conn_id: str) -> dict[str, object]:
    return SegmindHook(conn_id).submit("flux-1.1-pro", PAYLOAD)


@pytest.mark.parametrize("status", [429, 503])
def test_submit_retries_when_no_job_was_started(
    httpserver: HTTPServer, conn_id: str, waits: list[float], status: int
) -> None:
    httpserver.expect_ordered_request(SUBMIT, method="POST").respond_with_json(
        {"error": "busy"}, status=status
    )
    httpserver.expect_ordered_request(SUBMIT, method="POST").respond_with_json(QUEUED)
    assert _submit(conn_id) == QUEUED
    assert len(httpserver.log) == 2 and len(waits) == 1


@pytest.mark.parametrize("status", [502, 504])
def test_submit_gateway_errors_are_uncertain_and_not_retried(
    httpserver: HTTPServer, conn_id: str, waits: list[float], status: int
) -> None:
    httpserver.expect_request(SUBMIT, method="POST").respond_with_data("gateway", status=status)
    with pytest.raises(SegmindSubmitUncertainError) as info:
        _submit(conn_id)
    assert "job may exist" in str(info.value) and "NOT retried" in str(info.value)
    assert info.value.status_code == status
    assert len(httpserver.log) == 1 and waits == []
    # Airflow's own retries stop too: a task retry would submit anew and may pay twice.
    assert isinstance(info.value, AirflowFailException)


def test_submit_500_is_not_retried_and_not_uncertain(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(SUBMIT, method="POST").respond_with_json({"error": "boom"}, status=500)
    with pytest.raises(SegmindServerError) as info:
        _submit(conn_id)
    assert not isinstance(info.value, SegmindSubmitUncertainError)
    assert len(httpserver.log) == 1


def test_submit_429_exhausted_raises_rate_limit(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, waits: list[float]
) -> None:
    httpserver.expect_request(SUBMIT, method="POST").respond_with_json(
        {"error": "too many"}, status=429, headers={"Retry-After": "3"}
    )
    with pytest.raises(SegmindRateLimitError) as info:
        _submit(make_conn(base_url, max_retries=2))
    assert info.value.retry_after == 3.0
    assert waits == [3.0, 3.0] and len(httpserver.log) == 3


def test_submit_read_timeout_is_uncertain(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, waits: list[float]
) -> None:
    def slow(_: Request) -> Response:
        import time

        time.sleep(0.6)
        return Response("{}", content_type="application/json")

    httpserver.expect_request(SUBMIT, method="POST").respond_with_handler(slow)
    with pytest.raises(SegmindSubmitUncertainError, match="job may exist"):
        _submit(make_conn(base_url, timeout="0.2"))
    assert len(httpserver.log) <= 1 and waits == []


def test_get_read_timeout_is_retried(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, waits: list[float]
) -> None:
    calls = []

    def slow_once(_: Request) -> Response:
        import time

        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.6)
        return Response('{"status": "QUEUED"}', content_type="application/json")

    httpserver.expect_request("/v2/requests/r1/status").respond_with_handler(slow_once)
    assert SegmindHook(make_conn(base_url, timeout="0.2")).get_status("r1") == {"status": "QUEUED"}
    # The loopback server is single-threaded: retries queued behind the slow answer may time out too.
    assert len(waits) >= 1


def test_submit_connection_refused_is_retried(make_conn: Callable[..., str], waits: list[float]) -> None:
    conn_id = make_conn(f"http://127.0.0.1:{closed_port()}", max_retries=3)
    with pytest.raises(SegmindTransportError) as info:
        _submit(conn_id)
    assert info.value.maybe_sent is False
    assert not isinstance(info.value, SegmindSubmitUncertainError)
    assert len(waits) == 3


def test_submit_reset_after_send_is_uncertain(
    make_conn: Callable[..., str], waits: list[float], raw_server: Callable[..., RawServer]
) -> None:
    server = raw_server([None, None])
    with pytest.raises(SegmindSubmitUncertainError, match="job may exist"):
        _submit(make_conn(server.url))
    assert len(server.requests) == 1 and waits == []


def test_get_reset_after_send_is_retried(
    make_conn: Callable[..., str], waits: list[float], raw_server: Callable[..., RawServer]
) -> None:
    body = b'{"status": "QUEUED"}'
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    server = raw_server([None, ok])
    assert SegmindHook(make_conn(server.url)).get_status("r1") == {"status": "QUEUED"}
    assert len(server.requests) == 2 and len(waits) == 1


def test_submit_without_request_id_is_uncertain(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(SUBMIT, method="POST").respond_with_json({"status": "QUEUED"})
    with pytest.raises(SegmindSubmitUncertainError):
        _submit(conn_id)


def test_redirect_to_another_host_is_not_followed(
    httpserver: HTTPServer, conn_id: str, other_server: HTTPServer
) -> None:
    target = other_server.url_for("/v2/requests/r1/status?token=secret-ish")
    httpserver.expect_request("/v2/requests/r1/status").respond_with_data(
        "", status=302, headers={"Location": target}
    )
    other_server.expect_request("/v2/requests/r1/status").respond_with_json({"status": "QUEUED"})
    with pytest.raises(SegmindError, match="redirect") as info:
        SegmindHook(conn_id).get_status("r1")
    assert other_server.log == []
    assert "token" not in str(info.value)


@pytest.mark.parametrize(
    ("path", "method", "call"),
    [
        (SUBMIT, "POST", lambda hook: hook.submit("flux-1.1-pro", PAYLOAD)),
        ("/account/inference-request/request-history", "GET", lambda hook: hook.request_history()),
        ("/storage/upload-asset", "POST", lambda hook: hook.upload(b"\x89PNG\r\n\x1a\n", "image/png")),
    ],
)
def test_a_redirect_from_the_api_storage_or_account_host_is_not_followed(
    httpserver: HTTPServer,
    make_conn: Callable[..., str],
    base_url: str,
    other_server: HTTPServer,
    path: str,
    method: str,
    call: Callable[[SegmindHook], object],
) -> None:
    """Every host the key goes to answers a redirect to another host: nothing reaches that host."""
    conn_id = make_conn(
        base_url, storage_url=f"{base_url}/storage", account_url=f"{base_url}/account", max_retries=0
    )
    httpserver.expect_request(path, method=method).respond_with_data(
        "", status=307, headers={"Location": other_server.url_for(path)}
    )
    other_server.expect_request(path).respond_with_json({"request_id": "r9", "file_urls": ["x"], "data": []})
    with pytest.raises(SegmindError, match="redirect"):
        call(SegmindHook(conn_id))
    assert other_server.log == []
    assert httpserver.log[0][0].headers.get("x-api-key") == KEY


def test_key_only_sent_to_api_base(httpserver: HTTPServer, conn_id: str, other_server: HTTPServer) -> None:
    import io

    httpserver.expect_request("/v2/requests/r1").respond_with_json(
        {"status": "COMPLETED", "output": other_server.url_for("/media/r1.webp")}
    )
    other_server.expect_request("/media/r1.webp").respond_with_data(
        b"RIFFxxxxWEBP", content_type="image/webp"
    )
    hook = SegmindHook(conn_id)
    result = hook.get_result("r1")
    hook.download(result["output"], io.BytesIO(), max_bytes=100)
    assert httpserver.log[0][0].headers.get("x-api-key") == KEY
    assert all(req.headers.get("x-api-key") is None for req, _ in other_server.log)


def test_download_redirect_to_third_host_carries_no_key(
    httpserver: HTTPServer, conn_id: str, other_server: HTTPServer
) -> None:
    import io

    httpserver.expect_request("/final.png").respond_with_data(b"\x89PNG....", content_type="image/png")
    other_server.expect_request("/cdn/x.png").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/final.png")}
    )
    buffer = io.BytesIO()
    SegmindHook(conn_id).download(other_server.url_for("/cdn/x.png"), buffer, max_bytes=100)
    assert buffer.getvalue() == b"\x89PNG...."
    assert httpserver.log[0][0].headers.get("x-api-key") is None


def test_key_never_in_logs_exceptions_or_repr(
    httpserver: HTTPServer,
    make_conn: Callable[..., str],
    base_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import airflow.sdk.log

    masked: list[object] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", lambda secret, name=None: masked.append(secret))
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request("/v2/requests/r1").respond_with_json(
        {"error": f"invalid key {KEY} for this model"}, status=401
    )
    httpserver.expect_request(SUBMIT, method="POST").respond_with_data(f"<html>{KEY}</html>", status=502)
    httpserver.expect_request("/v2/requests/r2").respond_with_json(
        {"status": "FAILED", "error": f"{KEY} nsfw"}
    )
    hook = SegmindHook(make_conn(base_url, max_retries=1))
    errors: list[BaseException] = []
    for call in (lambda: hook.get_result("r1"), lambda: _submit_with(hook), lambda: hook.get_result("r2")):
        with pytest.raises(SegmindError) as info:
            call()
        errors.append(info.value)
    _ok, message = hook.test_connection()
    assert KEY in masked
    settings = hook.get_settings()
    texts = [
        caplog.text,
        repr(hook),
        str(hook),
        message,
        repr(settings),
        repr(process_state().budget(settings)),
    ]
    for exc in errors:
        texts += [str(exc), repr(exc), exc.detail]  # type: ignore[attr-defined]
    for text in texts:
        assert KEY not in text
    assert "***" in str(errors[0])


def _submit_with(hook: SegmindHook) -> object:
    return hook.submit("flux-1.1-pro", PAYLOAD)
