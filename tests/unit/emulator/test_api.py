"""The HTTP contract, path by path, over real loopback HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from segmind_provider.testing.emulator import SegmindEmulator

if TYPE_CHECKING:
    from .conftest import Submit

KEY = "emulator-test-key"
H = {"x-api-key": KEY}


def test_submit_answer_has_absolute_urls_from_the_host_header(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    port = segmind_emulator.base_url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost"):
        body = submit(f"http://{host}:{port}").json()
        rid = body["request_id"]
        assert body["status"] == "QUEUED"
        assert body["status_url"] == f"http://{host}:{port}/v2/requests/{rid}/status"
        assert body["response_url"] == f"http://{host}:{port}/v2/requests/{rid}"
        assert body["poll_url"] == body["status_url"]
        segmind_emulator.advance(30)
        output = http.get(body["response_url"], headers=H).json()["output"]
        assert output.startswith(f"http://{host}:")
        assert not output.startswith(f"http://{host}:{port}/")


def test_lifecycle_queued_processing_completed(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.configure(workers=1, time_scale=1.0)
    first = submit(segmind_emulator.base_url).json()
    second = submit(segmind_emulator.base_url).json()
    assert http.get(first["status_url"], headers=H).json()["status"] == "PROCESSING"
    queued = http.get(second["status_url"], headers=H)
    assert queued.status_code == 200
    assert queued.json() == {
        "request_id": second["request_id"],
        "status": "QUEUED",
        "status_url": second["status_url"],
        "response_url": second["response_url"],
        "metrics": {},
    }
    before = http.get(second["response_url"], headers=H)
    assert before.status_code == 200
    assert before.json() == {
        "request_id": second["request_id"],
        "status": "QUEUED",
        "output": None,
        "metrics": {},
        "error": None,
    }
    segmind_emulator.advance(17)  # the first is done (<= 16.2 s), the second runs
    assert http.get(first["status_url"], headers=H).json()["status"] == "COMPLETED"
    assert http.get(second["status_url"], headers=H).json()["status"] == "PROCESSING"
    segmind_emulator.advance(17)
    done = http.get(second["status_url"], headers=H).json()
    assert done["status"] == "COMPLETED"
    assert done["metrics"]["inference_time"] > 10
    assert "output" not in done


def test_failed_is_422_on_status_and_result(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.configure(blocked_words=["gore"])
    body = submit(segmind_emulator.base_url, prompt="lots of GORE").json()
    segmind_emulator.advance(5)
    for url in (body["status_url"], body["response_url"]):
        response = http.get(url, headers=H)
        assert response.status_code == 422
        assert response.json()["status"] == "FAILED"
        assert "gore" in response.json()["error"]


def test_unknown_request_and_model_give_404(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    base = segmind_emulator.base_url
    for url in (f"{base}/v2/requests/nope/status", f"{base}/v2/requests/nope"):
        response = http.get(url, headers=H)
        assert response.status_code == 404
        assert "error" in response.json()
    assert submit(base, model="no-such-model").status_code == 404
    assert http.post(f"{base}/v1/no-such-model", json={"prompt": "x"}, headers=H).status_code == 404
    assert http.get(f"{base}/v3/whatever", headers=H).json() == {"error": "Not found"}


def test_retention_expires_results(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    body = submit(segmind_emulator.base_url).json()
    segmind_emulator.advance(60)
    output = http.get(body["response_url"], headers=H).json()["output"]
    assert http.get(output).status_code == 200
    segmind_emulator.advance(3600)
    assert http.get(body["status_url"], headers=H).status_code == 404
    assert http.get(output).status_code == 404


def test_retention_scaled(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    segmind_emulator.configure(retention=1000, retention_scaled=True)  # 10 s at time_scale 0.01
    body = submit(segmind_emulator.base_url).json()
    segmind_emulator.advance(5)
    assert http.get(body["status_url"], headers=H).status_code == 200
    segmind_emulator.advance(6)
    assert http.get(body["status_url"], headers=H).status_code == 404


def test_expire_one_request(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    body = submit(segmind_emulator.base_url).json()
    assert segmind_emulator.expire(body["request_id"]) == 1
    assert http.get(body["status_url"], headers=H).status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"aspect_ratio": "custom", "width": 100}, "width"),
        ({"aspect_ratio": "custom", "height": 2000}, "height"),
        ({"width": "wide"}, "width"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_quality": 101}, "output_quality"),
        ({"safety_tolerance": 0}, "safety_tolerance"),
        ({"safety_tolerance": 6}, "safety_tolerance"),
        ({"seed": "abc"}, "seed"),
        ({"seed": True}, "seed"),
        ({"prompt_upsampling": "yes"}, "prompt_upsampling"),
        ({"image_prompt": "not a url"}, "image_prompt"),
    ],
)
def test_validation_400_names_the_field(
    http: httpx.Client, segmind_emulator: SegmindEmulator, params: dict[str, object], field: str
) -> None:
    body = {"prompt": "ok", **params}
    for version in ("v1", "v2"):
        response = http.post(f"{segmind_emulator.base_url}/{version}/flux-1.1-pro", json=body, headers=H)
        assert response.status_code == 400
        assert response.json()["error"].startswith(field + ":")


def test_body_must_be_a_json_object(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    url = f"{segmind_emulator.base_url}/v2/flux-1.1-pro"
    assert http.post(url, content=b"{not json", headers=H).status_code == 400
    assert http.post(url, json=[1, 2], headers=H).status_code == 400


def test_missing_key_is_401_any_key_is_accepted(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    base = segmind_emulator.base_url
    assert submit(base, key=None).status_code == 401
    assert http.get(f"{base}/v1/get-user-credits").status_code == 401
    assert http.get(f"{base}/v2/requests/x/status").status_code == 401
    assert submit(base, key="anything-at-all").status_code == 200


def test_configured_keys(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    segmind_emulator.configure(api_keys=["good-1", "good-2"])
    base = segmind_emulator.base_url
    assert submit(base, key="good-2").status_code == 200
    response = submit(base, key="bad")
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized: invalid API key"}
    assert segmind_emulator.config()["api_keys_configured"] == 2
    segmind_emulator.reset()
    assert submit(base, key="bad").status_code == 200


def test_credits_spent_then_406(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.configure(credits=0.08, free_credits=0.05, cost_per_image=0.05)
    base = segmind_emulator.base_url
    assert http.get(f"{base}/v1/get-user-credits", headers=H).json() == {
        "credits": 0.08,
        "free-credits": 0.05,
    }
    assert submit(base).status_code == 200
    assert http.get(f"{base}/v1/get-user-credits", headers=H).json() == {"credits": 0.08, "free-credits": 0.0}
    assert submit(base).status_code == 200
    response = submit(base)
    assert response.status_code == 406
    assert "credits" in response.json()["error"].lower()
    sync = http.post(f"{base}/v1/flux-1.1-pro", json={"prompt": "x"}, headers=H)
    assert sync.status_code == 406


def test_unlimited_credits_by_default(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    body = http.get(f"{segmind_emulator.base_url}/v1/get-user-credits", headers=H).json()
    assert body == {"credits": 1_000_000.0, "free-credits": 0.0}


def test_sync_reports_remaining_credits_header(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.configure(credits=1.0, time_scale=0.0001)
    response = http.post(
        f"{segmind_emulator.base_url}/v1/flux-1.1-pro",
        json={"prompt": "x", "output_format": "jpg"},
        headers=H,
    )
    assert response.headers["X-remaining-credits"] == "0.95"


def test_rate_limit_429_with_retry_after_per_key(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.configure(rate_limit=3, rate_limit_window=60)
    base = segmind_emulator.base_url
    body = submit(base).json()
    assert http.get(body["status_url"], headers=H).status_code == 200
    assert http.get(f"{base}/v1/get-user-credits", headers=H).status_code == 200
    limited = http.get(body["status_url"], headers=H)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit" in limited.json()["error"].lower()
    assert submit(base, key="another-key").status_code == 200
    segmind_emulator.advance(61)
    assert http.get(f"{base}/v1/get-user-credits", headers=H).status_code == 200


def test_media_needs_no_key_and_is_logged_without_one(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    body = submit(segmind_emulator.base_url, output_format="jpg").json()
    assert http.get(f"{segmind_emulator.media_url}/media/{body['request_id']}.jpg").status_code == 404
    segmind_emulator.advance(30)
    output = http.get(body["response_url"], headers=H).json()["output"]
    media = http.get(output)
    assert media.status_code == 200
    assert media.headers["content-type"] == "image/jpeg"
    assert media.content[:3] == b"\xff\xd8\xff"
    media_calls = segmind_emulator.calls(endpoint="media")
    assert [c["key_present"] for c in media_calls] == [False, False]
    assert http.get(output.replace(".jpg", ".png")).status_code == 404


def test_other_models_can_be_registered(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.register_model("tiny-image", latency=2.0, output="image")
    segmind_emulator.register_model("tiny-text", latency=1.0, output="text")
    base = segmind_emulator.base_url
    image = submit(base, model="tiny-image", prompt="p", width=64, height=64, aspect_ratio="custom").json()
    text = submit(base, model="tiny-text", prompt="hello").json()
    segmind_emulator.advance(5)
    image_result = http.get(image["response_url"], headers=H).json()
    assert image_result["metrics"]["inference_time"] < 3
    assert http.get(image_result["output"]).status_code == 200
    assert "hello" in http.get(text["response_url"], headers=H).json()["output"]
    sync = http.post(f"{base}/v1/tiny-text", json={"prompt": "hi"}, headers=H)
    assert sync.json()["status"] == "COMPLETED"


def test_call_log_records_path_method_status_and_key_presence(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    base = segmind_emulator.base_url
    submit(base)
    submit(base, key=None)
    calls = segmind_emulator.calls()
    assert [(c["method"], c["path"], c["status"], c["key_present"]) for c in calls] == [
        ("POST", "/v2/flux-1.1-pro", 200, True),
        ("POST", "/v2/flux-1.1-pro", 401, False),
    ]
    assert segmind_emulator.calls(since=calls[0]["seq"]) == calls[1:]
    segmind_emulator.clear_calls()
    assert segmind_emulator.calls() == []


def test_admin_rejects_bad_options(segmind_emulator: SegmindEmulator) -> None:
    from segmind_provider.testing.emulator import EmulatorControlError

    with pytest.raises(EmulatorControlError, match="time_scale"):
        segmind_emulator.configure(time_scale=0)
    with pytest.raises(EmulatorControlError, match="not a runtime option"):
        segmind_emulator.configure(render_cache_mb=1)
    assert segmind_emulator.config()["time_scale"] == 0.01


def test_public_urls_override_the_host_header(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.configure(public_url="http://api.example:1/", media_public_url="http://cdn.example:2")
    body = submit(segmind_emulator.base_url).json()
    assert body["status_url"].startswith("http://api.example:1/v2/requests/")
    segmind_emulator.advance(30)
    response_url = body["response_url"].replace("http://api.example:1", segmind_emulator.base_url)
    output = http.get(response_url, headers=H).json()["output"]
    assert output == f"http://cdn.example:2/media/{body['request_id']}.webp"


def test_json_model_output(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    segmind_emulator.register_model("tiny-json", latency=1.0, output="json")
    body = submit(segmind_emulator.base_url, model="tiny-json", seed=3).json()
    segmind_emulator.advance(5)
    result = http.get(body["response_url"], headers=H).json()
    assert result["output"] == {"text": "Emulated tiny-json output", "seed": 3}


def test_bad_model_registration_is_refused(segmind_emulator: SegmindEmulator) -> None:
    from segmind_provider.testing.emulator import EmulatorControlError

    with pytest.raises(EmulatorControlError, match="output"):
        segmind_emulator.register_model("m", output="hologram")


def test_cold_model_over_http(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    # Loading for 12 s of wall time, then 10 s of work: the checks below hold on a loaded machine
    # unless a single step stalls for about 10 s.
    segmind_emulator.register_model("flux-1.1-pro", latency=1000.0, jitter=0.0, cold_start=1200.0)
    body = submit(segmind_emulator.base_url).json()
    segmind_emulator.advance(1.0)  # 100 simulated seconds at time_scale 0.01: still loading
    assert http.get(body["status_url"], headers=H).json()["status"] == "QUEUED"
    segmind_emulator.advance(11.5)  # 1,250 simulated seconds: loaded, working
    assert http.get(body["status_url"], headers=H).json()["status"] == "PROCESSING"
