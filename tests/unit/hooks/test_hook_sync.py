"""SegmindHook sync path against real HTTP on loopback (pytest-httpserver)."""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
from collections.abc import Callable

import pytest
from airflow.sdk.exceptions import AirflowFailException
from pytest_httpserver import HTTPServer
from segmind_hook_testlib import KEY, RawServer
from werkzeug import Request, Response

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
    SegmindValidationError,
)
from segmind_provider.hooks.connection import DEFAULT_BASE_URL
from segmind_provider.hooks.errors import is_content_block
from segmind_provider.hooks.segmind import SegmindHook, SyncRunResult
from segmind_provider.runtime import process_state

STATUS = "/v2/requests/req-1/status"
RESULT = "/v2/requests/req-1"


def test_get_status_sends_key_and_caches_connection(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(STATUS, method="GET", headers={"x-api-key": KEY}).respond_with_json(
        {"request_id": "req-1", "status": "PROCESSING"}
    )
    hook = SegmindHook(conn_id)
    assert hook.get_status("req-1") == {"request_id": "req-1", "status": "PROCESSING"}
    settings = hook.get_settings()
    assert hook.get_status("req-1")["status"] == "PROCESSING"
    assert hook.get_settings() is settings
    assert len(httpserver.log) == 2


def test_calls_start_no_thread_each_for_their_deadlines(
    httpserver: HTTPServer, conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call's whole-call deadline is kept by one watchdog thread per process: a thread per call
    (``threading.Timer``, before) was four thread starts per image of a batch."""
    httpserver.expect_request(STATUS).respond_with_json({"request_id": "req-1", "status": "PROCESSING"})
    hook = SegmindHook(conn_id)
    hook.get_status("req-1")  # the watchdog may start here, once
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    for _ in range(20):
        assert hook.get_status("req-1")["status"] == "PROCESSING"
    assert started == []


def test_failed_status_is_returned_not_raised(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(STATUS).respond_with_json(
        {"request_id": "req-1", "status": "FAILED", "error": "model crashed"}, status=422
    )
    answer = SegmindHook(conn_id).get_status("req-1")
    assert answer["status"] == "FAILED"
    assert answer["error"] == "model crashed"


def test_failed_status_with_non_json_body(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(STATUS).respond_with_data("upstream says no", status=422)
    answer = SegmindHook(conn_id).get_status("req-1")
    assert answer == {"request_id": "req-1", "status": "FAILED", "error": "upstream says no"}


@pytest.mark.parametrize(
    "reason",
    [
        "NSFW content detected",
        "Blocked by the moderation filter",
        "Request flagged by safety checker",
        "Output violates content policy",
        "RAI block: prompt rejected",
        "Responsible AI rejected the prompt",
    ],
)
def test_failed_result_content_block(httpserver: HTTPServer, conn_id: str, reason: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json({"status": "FAILED", "error": reason}, status=422)
    with pytest.raises(SegmindContentBlockedError) as info:
        SegmindHook(conn_id).get_result("req-1")
    assert isinstance(info.value, AirflowFailException)
    assert info.value.detail == reason
    assert info.value.request_id == "req-1"


def test_failed_result_other_reason_is_retryable_by_airflow(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json(
        {"status": "FAILED", "error": "GPU out of memory"}, status=422
    )
    with pytest.raises(SegmindRequestFailedError) as info:
        SegmindHook(conn_id).get_result("req-1")
    assert not isinstance(info.value, (SegmindContentBlockedError, AirflowFailException))
    assert "GPU out of memory" in str(info.value)


def test_result_with_failed_status_in_200_raises(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json({"status": "FAILED", "error": "nsfw"})
    with pytest.raises(SegmindContentBlockedError):
        SegmindHook(conn_id).get_result("req-1")


def test_content_block_rule() -> None:
    assert is_content_block("Image flagged as NSFW")
    assert not is_content_block("timeout while loading model")
    assert not is_content_block("")
    assert not is_content_block(None)


@pytest.mark.parametrize(
    ("status", "exc_type", "fail_fast"),
    [
        (400, SegmindBadRequestError, True),
        (401, SegmindAuthError, True),
        (403, SegmindAuthError, True),
        (404, SegmindNotFoundError, False),
        (406, SegmindInsufficientCreditsError, True),
        (429, SegmindRateLimitError, False),
        (500, SegmindServerError, False),
        (502, SegmindServerError, False),
        (503, SegmindServerError, False),
        (504, SegmindServerError, False),
        (418, SegmindError, False),
    ],
)
def test_status_code_mapping(
    httpserver: HTTPServer,
    make_conn: Callable[..., str],
    base_url: str,
    waits: list[float],
    status: int,
    exc_type: type[SegmindError],
    fail_fast: bool,
) -> None:
    httpserver.expect_request(RESULT).respond_with_json({"error": f"reason {status}"}, status=status)
    hook = SegmindHook(make_conn(base_url, max_retries="0"))
    with pytest.raises(exc_type) as info:
        hook.get_result("req-1")
    assert type(info.value) is exc_type
    assert isinstance(info.value, AirflowFailException) is fail_fast
    assert info.value.status_code == status
    assert info.value.request_id == "req-1"
    assert f"reason {status}" in info.value.detail
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    ("exc", "advice"),
    [
        (SegmindBadRequestError("bad width", status_code=400), "fix the payload"),
        (SegmindInsufficientCreditsError("Insufficient credits", status_code=406), "add credits"),
        (SegmindContentBlockedError("NSFW content", request_id="r-1"), "change the prompt"),
    ],
)
def test_errors_retries_cannot_fix_say_what_to_do(exc: SegmindError, advice: str) -> None:
    text = str(exc)
    assert advice in text and "does not retry" in text
    assert exc.detail in text and exc.hint not in exc.detail  # the detail stays the API's words


@pytest.mark.parametrize("field", ["error", "detail", "message"])
def test_detail_fields(httpserver: HTTPServer, conn_id: str, field: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json({field: "bad aspect_ratio"}, status=400)
    with pytest.raises(SegmindBadRequestError) as info:
        SegmindHook(conn_id).get_result("req-1")
    assert info.value.detail == "bad aspect_ratio"


def test_validation_detail_list_is_readable(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json(
        {"detail": [{"loc": ["width"], "msg": "too big"}]}, status=400
    )
    with pytest.raises(SegmindBadRequestError) as info:
        SegmindHook(conn_id).get_result("req-1")
    assert "too big" in str(info.value)


def test_non_json_error_body_gives_readable_message(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str
) -> None:
    html = "<html><body>" + "Bad Gateway " * 100 + "</body></html>"
    httpserver.expect_request(RESULT).respond_with_data(html, status=502, content_type="text/html")
    with pytest.raises(SegmindServerError) as info:
        SegmindHook(make_conn(base_url, max_retries=0)).get_result("req-1")
    message = str(info.value)
    assert message.startswith("HTTP 502 from Segmind: <html><body>Bad Gateway")
    assert len(info.value.detail) <= 200
    assert "Traceback" not in message and "JSONDecodeError" not in message


def test_non_json_success_body_is_a_server_error(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str
) -> None:
    httpserver.expect_request(STATUS).respond_with_data("<html>captive portal</html>", status=200)
    with pytest.raises(SegmindServerError, match="expected JSON"):
        SegmindHook(make_conn(base_url, max_retries=0)).get_status("req-1")


def test_get_retries_5xx_then_succeeds(httpserver: HTTPServer, conn_id: str, waits: list[float]) -> None:
    httpserver.expect_ordered_request(STATUS).respond_with_data("oops", status=500)
    httpserver.expect_ordered_request(STATUS).respond_with_json({}, status=503)
    httpserver.expect_ordered_request(STATUS).respond_with_data("", status=504)
    httpserver.expect_ordered_request(STATUS).respond_with_json({"status": "COMPLETED"})
    assert SegmindHook(conn_id).get_status("req-1") == {"status": "COMPLETED"}
    assert len(waits) == 3
    assert 0 <= waits[0] <= 1 and 0 <= waits[1] <= 2 and 0 <= waits[2] <= 4


def test_get_gives_up_after_max_retries(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, waits: list[float]
) -> None:
    httpserver.expect_request(STATUS).respond_with_json({"error": "busy"}, status=503)
    with pytest.raises(SegmindServerError):
        SegmindHook(make_conn(base_url, max_retries="2")).get_status("req-1")
    assert len(httpserver.log) == 3
    assert len(waits) == 2


def test_retry_after_seconds(httpserver: HTTPServer, conn_id: str, waits: list[float]) -> None:
    httpserver.expect_ordered_request(STATUS).respond_with_json(
        {"error": "slow down"}, status=429, headers={"Retry-After": "7"}
    )
    httpserver.expect_ordered_request(STATUS).respond_with_json({"status": "QUEUED"})
    assert SegmindHook(conn_id).get_status("req-1")["status"] == "QUEUED"
    assert waits == [7.0]


def test_retry_after_http_date(httpserver: HTTPServer, conn_id: str, waits: list[float]) -> None:
    from email.utils import formatdate

    when = formatdate(time.time() + 30, usegmt=True)
    httpserver.expect_ordered_request(STATUS).respond_with_json({}, status=503, headers={"Retry-After": when})
    httpserver.expect_ordered_request(STATUS).respond_with_json({"status": "QUEUED"})
    SegmindHook(conn_id).get_status("req-1")
    assert len(waits) == 1
    assert 27 <= waits[0] <= 31


def test_retry_after_is_capped(httpserver: HTTPServer, conn_id: str, waits: list[float]) -> None:
    httpserver.expect_ordered_request(STATUS).respond_with_json(
        {}, status=429, headers={"Retry-After": "86400"}
    )
    httpserver.expect_ordered_request(STATUS).respond_with_json({"status": "QUEUED"})
    SegmindHook(conn_id).get_status("req-1")
    assert waits == [120.0]


def test_run_returns_media_bytes(httpserver: HTTPServer, conn_id: str) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    httpserver.expect_request(
        "/v1/flux-1.1-pro", method="POST", json={"prompt": "a fox"}, headers={"x-api-key": KEY}
    ).respond_with_data(png, content_type="image/png")
    result = SegmindHook(conn_id).run("flux-1.1-pro", {"prompt": "a fox"})
    assert result == SyncRunResult(content=png, content_type="image/png", json=None)


def test_run_returns_json_for_non_media_models(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request("/v1/some-llm", method="POST").respond_with_json({"text": "hi"})
    result = SegmindHook(conn_id).run("some-llm", {"prompt": "x"})
    assert result.json == {"text": "hi"} and result.content is None
    assert result.content_type.startswith("application/json")


def test_submit_posts_payload(httpserver: HTTPServer, conn_id: str) -> None:
    answer = {"request_id": "r9", "status": "QUEUED", "status_url": "x", "response_url": "y"}
    httpserver.expect_request(
        "/v2/flux-1.1-pro", method="POST", json={"prompt": "p", "seed": 3}
    ).respond_with_json(answer)
    assert SegmindHook(conn_id).submit("flux-1.1-pro", {"prompt": "p", "seed": 3}) == answer


def test_path_segments_are_escaped(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request("/v2/requests/a/../b?c/status").respond_with_json({"status": "QUEUED"})
    assert SegmindHook(conn_id).get_status("a/../b?c")["status"] == "QUEUED"
    with pytest.raises(SegmindValidationError):
        SegmindHook(conn_id).get_status("  ")


def test_get_credits(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request("/v1/get-user-credits", headers={"x-api-key": KEY}).respond_with_json(
        {"credits": 0.0, "free-credits": 0.018}
    )
    assert SegmindHook(conn_id).get_credits() == {"credits": 0.0, "free-credits": 0.018}


@pytest.mark.parametrize(
    ("status", "ok", "words"), [(404, True, "accepted"), (401, False, "bad key"), (403, False, "bad key")]
)
def test_test_connection(httpserver: HTTPServer, conn_id: str, status: int, ok: bool, words: str) -> None:
    httpserver.expect_request(
        "/v2/requests/airflow-segmind-connection-test-00000000/status", headers={"x-api-key": KEY}
    ).respond_with_json({"error": "nope"}, status=status)
    result = SegmindHook(conn_id).test_connection()
    assert result[0] is ok and words in result[1]
    assert len(httpserver.log) == 1


def test_test_connection_without_key(make_conn: Callable[..., str]) -> None:
    ok, message = SegmindHook(make_conn("http://127.0.0.1:9", password=None)).test_connection()
    assert not ok and "no API key" in message


def test_env_fallback_uses_default_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    hook = SegmindHook("segmind_test")
    assert hook.base_url == DEFAULT_BASE_URL
    assert hook.get_settings().api_key == KEY


def test_env_fallback_with_base_url(
    httpserver: HTTPServer, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setenv("SEGMIND_BASE_URL", base_url + "/v1")
    httpserver.expect_request(STATUS, headers={"x-api-key": KEY}).respond_with_json({"status": "QUEUED"})
    assert SegmindHook("segmind_test").get_status("req-1")["status"] == "QUEUED"


def test_a_rejected_key_names_where_it_came_from(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpserver.expect_request(STATUS).respond_with_json({"error": "Unauthorized"}, status=401)
    with pytest.raises(SegmindAuthError, match="check the API key of connection 'segmind_test'"):
        SegmindHook(make_conn(base_url)).get_status("req-1")
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setenv("SEGMIND_BASE_URL", base_url)
    with pytest.raises(
        SegmindAuthError, match=r"of SEGMIND_API_KEY \(there is no connection 'segmind_none'\)"
    ):
        SegmindHook("segmind_none").get_status("req-1")


def test_missing_key_fails_before_any_request(httpserver: HTTPServer) -> None:
    with pytest.raises(SegmindAuthError, match="SEGMIND_API_KEY") as info:
        SegmindHook("segmind_test").get_status("req-1")
    assert isinstance(info.value, AirflowFailException)
    assert httpserver.log == []


def test_connection_without_password_fails_before_any_request(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    with pytest.raises(SegmindAuthError, match="no API key"):
        SegmindHook(make_conn(base_url, password=None)).submit("flux-1.1-pro", {"prompt": "x"})
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "https://api.segmind.com"),
        ("", "https://api.segmind.com"),
        ("api.segmind.com", "https://api.segmind.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
        ("https://proxy.example/segmind/v1", "https://proxy.example/segmind"),
    ],
)
def test_host_forms(make_conn: Callable[..., str], host: str | None, expected: str) -> None:
    assert SegmindHook(make_conn(host)).base_url == expected


def test_bad_scheme_is_rejected(make_conn: Callable[..., str]) -> None:
    with pytest.raises(SegmindValidationError):
        SegmindHook(make_conn("ftp://files.example")).base_url  # noqa: B018


def test_string_extras(make_conn: Callable[..., str]) -> None:
    hook = SegmindHook(
        make_conn("http://127.0.0.1:1", timeout="5", max_retries="2", requests_per_minute="50")
    )
    settings = hook.get_settings()
    assert (settings.timeout, settings.max_retries, settings.requests_per_minute) == (5.0, 2, 50.0)
    assert process_state().budget(settings).requests_per_minute == 50.0


def test_invalid_extra(make_conn: Callable[..., str]) -> None:
    with pytest.raises(SegmindValidationError, match="timeout"):
        SegmindHook(make_conn("http://127.0.0.1:1", timeout="soon")).get_settings()


def test_download_streams_without_key(httpserver: HTTPServer, conn_id: str, other_server: HTTPServer) -> None:
    other_server.expect_request("/media/img.webp").respond_with_data(
        b"RIFF1234WEBP", content_type="image/webp"
    )
    buffer = io.BytesIO()
    hook = SegmindHook(conn_id)
    content_type = hook.download(other_server.url_for("/media/img.webp?sig=abc"), buffer, max_bytes=1000)
    assert content_type == "image/webp"
    assert buffer.getvalue() == b"RIFF1234WEBP"
    request = other_server.log[0][0]
    assert request.headers.get("x-api-key") is None


def test_download_max_bytes(httpserver: HTTPServer, conn_id: str, other_server: HTTPServer) -> None:
    other_server.expect_request("/big").respond_with_data(b"x" * 5000)

    def chunked(_: Request) -> Response:
        return Response((b"y" * 1000 for _ in range(10)), content_type="image/png")

    other_server.expect_request("/stream").respond_with_handler(chunked)
    hook = SegmindHook(conn_id)
    with pytest.raises(SegmindOutputError, match="limit"):
        hook.download(other_server.url_for("/big"), io.BytesIO(), max_bytes=1000)
    with pytest.raises(SegmindOutputError, match="limit"):
        hook.download(other_server.url_for("/stream"), io.BytesIO(), max_bytes=2500)


def test_download_rejects_other_schemes(conn_id: str) -> None:
    for url in ("file:///etc/passwd", "ftp://x/y", "data:image/png;base64,AAAA"):
        with pytest.raises(SegmindOutputError, match="only http"):
            SegmindHook(conn_id).download(url, io.BytesIO(), max_bytes=10)


def test_download_retries_and_restarts_from_scratch(
    conn_id: str, raw_server: Callable[..., RawServer], waits: list[float]
) -> None:
    body = b"\x89PNG" + b"z" * 200
    truncated = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 204\r\n\r\n" + body[:50]
    full = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 204\r\nConnection: close\r\n\r\n"
        + body
    )
    server = raw_server([truncated, full])
    buffer = io.BytesIO(b"HEAD")
    buffer.seek(4)
    assert SegmindHook(conn_id).download(f"{server.url}/img.png", buffer, max_bytes=10_000) == "image/png"
    assert buffer.getvalue() == b"HEAD" + body
    assert len(waits) == 1


def test_download_http_error_is_output_error(
    httpserver: HTTPServer, make_conn: Callable[..., str], base_url: str, other_server: HTTPServer
) -> None:
    other_server.expect_request("/gone").respond_with_data("expired", status=403)
    with pytest.raises(SegmindOutputError) as info:
        SegmindHook(make_conn(base_url, max_retries=0)).download(
            other_server.url_for("/gone"), io.BytesIO(), max_bytes=9
        )
    assert info.value.status_code == 403


def test_errors_pickle_round_trip() -> None:
    exc = SegmindRateLimitError("slow", retry_after=3.0, request_id="r")
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is SegmindRateLimitError
    assert (copy.detail, copy.retry_after, copy.request_id, copy.status_code) == ("slow", 3.0, "r", 429)
    assert str(copy) == str(exc)


def test_json_helpers_do_not_leak(httpserver: HTTPServer, conn_id: str) -> None:
    httpserver.expect_request(RESULT).respond_with_json({"status": "COMPLETED", "output": ["a", "b"]})
    assert json.dumps(SegmindHook(conn_id).get_result("req-1"))
