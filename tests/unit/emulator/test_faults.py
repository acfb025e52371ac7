"""Every fault knob: errors for N calls or with a probability, delays, drops, lost answers."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from segmind_provider.testing.emulator import EmulatorControlError, FaultRule, SegmindEmulator

if TYPE_CHECKING:
    from .conftest import Submit

KEY = "emulator-test-key"
H = {"x-api-key": KEY}


@pytest.mark.parametrize("status", [500, 502, 504])
def test_error_for_the_next_n_calls(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit, status: int
) -> None:
    body = submit(segmind_emulator.base_url).json()
    segmind_emulator.add_fault("status", status=status, count=2)
    codes = [http.get(body["status_url"], headers=H).status_code for _ in range(3)]
    assert codes == [status, status, 200]
    assert segmind_emulator.faults() == []
    faulty = http.get(body["status_url"], headers=H)
    assert faulty.status_code == 200
    logged = [c["status"] for c in segmind_emulator.calls(endpoint="status")]
    assert logged == [status, status, 200, 200]


def test_fault_error_body_is_json_with_error(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("credits", status=502, count=1)
    response = http.get(f"{segmind_emulator.base_url}/v1/get-user-credits", headers=H)
    assert response.json() == {"error": "Injected fault: 502 Bad Gateway"}


def test_custom_fault_body(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("credits", status=504, count=1, body="<html>gateway timeout</html>")
    response = http.get(f"{segmind_emulator.base_url}/v1/get-user-credits", headers=H)
    assert (response.status_code, response.text) == (504, "<html>gateway timeout</html>")


def test_probability_is_seeded_and_partial(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    url = f"{segmind_emulator.base_url}/v1/get-user-credits"

    def run() -> list[int]:
        segmind_emulator.reset()
        segmind_emulator.add_fault("credits", status=500, probability=0.5)
        return [http.get(url, headers=H).status_code for _ in range(40)]

    first = run()
    assert 0 < first.count(500) < 40
    assert run() == first


def test_endpoint_scoping(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    segmind_emulator.add_fault("result", status=500)
    body = submit(segmind_emulator.base_url).json()
    assert http.get(body["status_url"], headers=H).status_code == 200
    assert http.get(body["response_url"], headers=H).status_code == 500
    segmind_emulator.clear_faults()
    segmind_emulator.add_fault("api", status=503)
    assert http.get(body["status_url"], headers=H).status_code == 503
    assert http.get(f"{segmind_emulator.media_url}/media/x.webp").status_code == 404


def test_faults_fire_before_auth(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("credits", status=502, count=1)
    response = http.get(f"{segmind_emulator.base_url}/v1/get-user-credits")
    assert response.status_code == 502


def test_delay_slows_the_answer(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("credits", delay=0.3, count=1)
    assert segmind_emulator.faults()[0]["kind"] == "delay"
    url = f"{segmind_emulator.base_url}/v1/get-user-credits"
    started = time.perf_counter()
    assert http.get(url, headers=H).status_code == 200
    assert time.perf_counter() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        segmind_emulator.add_fault("credits", delay=1.0, count=1)
        http.get(url, headers=H, timeout=0.2)


def test_drop_closes_the_connection_without_answer(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    body = submit(segmind_emulator.base_url).json()
    segmind_emulator.add_fault("status", kind="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(body["status_url"], headers=H)
    assert http.get(body["status_url"], headers=H).status_code == 200
    assert [c["status"] for c in segmind_emulator.calls(endpoint="status")] == [0, 200]


def test_after_fault_loses_the_answer_but_creates_the_job(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    segmind_emulator.add_fault("submit", status=504, count=1, when="after")
    assert submit(segmind_emulator.base_url).status_code == 504
    assert segmind_emulator.stats()["jobs"] == 1
    segmind_emulator.add_fault("submit", kind="drop", count=1, when="after")
    with pytest.raises(httpx.RemoteProtocolError):
        submit(segmind_emulator.base_url)
    assert segmind_emulator.stats()["jobs"] == 2


def test_media_faults(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    body = submit(segmind_emulator.base_url, output_format="jpg").json()
    segmind_emulator.advance(30)
    output = http.get(body["response_url"], headers=H).json()["output"]
    segmind_emulator.add_fault("media", status=500, count=1)
    assert http.get(output).status_code == 500
    segmind_emulator.add_fault("media", kind="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(output)
    assert http.get(output).status_code == 200


def test_remove_one_fault(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    fault_id = segmind_emulator.add_fault("credits", status=500)
    segmind_emulator.remove_fault(fault_id)
    assert segmind_emulator.faults() == []
    with pytest.raises(EmulatorControlError):
        segmind_emulator.remove_fault(fault_id)


@pytest.mark.parametrize(
    "rule",
    [
        {"endpoint": "nowhere"},
        {"kind": "explode"},
        {"status": 200},
        {"probability": 2},
        {"count": 0},
        {"when": "during"},
        {"endpoint": "storage"},
    ],
)
def test_bad_fault_rules_are_refused(
    http: httpx.Client, segmind_emulator: SegmindEmulator, rule: dict[str, object]
) -> None:
    answer = http.post(f"{segmind_emulator.base_url}/_emulator/faults", json=rule)
    assert answer.status_code == 400, answer.text


def test_admin_fault_endpoint_over_plain_http(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    admin = f"{segmind_emulator.base_url}/_emulator/faults"
    created = http.post(admin, json={"endpoint": "credits", "status": 502, "count": 1}).json()
    assert created["id"] >= 1
    assert http.get(admin).json()[0]["status"] == 502
    assert http.delete(admin).json() == {"ok": True}
    assert http.get(admin).json() == []


def test_cli_fault_spec() -> None:
    rule = FaultRule.parse("endpoint=status,status=502,count=2,probability=0.5")
    assert (rule.endpoint, rule.kind, rule.status, rule.count, rule.probability) == (
        "status",
        "error",
        502,
        2,
        0.5,
    )
    assert FaultRule.parse("endpoint=media,delay=1.5").kind == "delay"
    with pytest.raises(ValueError):
        FaultRule.parse("endpoint")


def test_startup_faults_come_back_after_reset(http: httpx.Client) -> None:
    with SegmindEmulator(time_scale=0.01, faults=[{"endpoint": "credits", "status": 500}]) as emu:
        url = f"{emu.base_url}/v1/get-user-credits"
        assert http.get(url, headers=H).status_code == 500
        emu.clear_faults()
        assert http.get(url, headers=H).status_code == 200
        emu.reset()
        assert http.get(url, headers=H).status_code == 500


def test_lost_answer_by_hang_creates_and_bills_the_job(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    """The submit is served and billed, then the connection is held unanswered: the client times out."""
    segmind_emulator.configure(credits=1.0)
    segmind_emulator.lose_answer("submit", how="hang", hold=30)
    assert segmind_emulator.faults()[0]["kind"] == "hang"
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            f"{segmind_emulator.base_url}/v2/flux-1.1-pro", json={"prompt": "lost"}, headers=H, timeout=0.5
        )
    (job,) = segmind_emulator.requests()
    assert (job["model"], job["body"], job["cost"]) == ("flux-1.1-pro", {"prompt": "lost"}, job["cost"])
    assert job["cost"] > 0
    assert segmind_emulator.config()["credits_remaining"] == pytest.approx(1.0 - job["cost"])
    (call,) = segmind_emulator.calls(endpoint="submit")  # logged at once, not when the hold ends
    assert (call["status"], call["request_id"], call["key_present"]) == (0, job["request_id"], True)
    history = http.get(segmind_emulator.account_url + "/inference-request/request-history", headers=H).json()
    assert [row["request_id"] for row in history["data"]] == [job["request_id"]]
    assert submit(segmind_emulator.base_url).status_code == 200  # count=1: the next answer arrives


def test_lost_answer_by_drop(http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit) -> None:
    fault_id = segmind_emulator.lose_answer("submit", how="drop", count=None)
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            submit(segmind_emulator.base_url)
    assert len(segmind_emulator.requests()) == 2
    segmind_emulator.remove_fault(fault_id)
    with pytest.raises(ValueError, match="how"):
        segmind_emulator.lose_answer(how="explode")


def _png_output(http: httpx.Client, emu: SegmindEmulator, submit: Submit) -> str:
    body = submit(emu.base_url, output_format="png").json()
    emu.advance(30)
    return str(http.get(body["response_url"], headers=H).json()["output"])


def test_corrupt_media_keeps_length_and_png_signature_but_does_not_decode(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    output = _png_output(http, segmind_emulator, submit)
    clean = http.get(output).content
    segmind_emulator.add_fault("media", kind="corrupt", count=1)
    broken = http.get(output)
    assert broken.status_code == 200
    assert int(broken.headers["content-length"]) == len(broken.content) == len(clean)
    assert broken.content[:8] == b"\x89PNG\r\n\x1a\n" and broken.content != clean
    image = Image.open(io.BytesIO(broken.content))  # the header still reads...
    assert image.size == (1024, 1024)
    with pytest.raises((OSError, SyntaxError, ValueError)):
        image.load()  # ...but the pixels do not decode
    assert http.get(output).content == clean


def test_truncated_media_announces_the_full_length_then_stops(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    output = _png_output(http, segmind_emulator, submit)
    size = len(http.get(output).content)
    segmind_emulator.add_fault("media", kind="truncate", count=1)
    with http.stream("GET", output) as response:
        assert (response.status_code, int(response.headers["content-length"])) == (200, size)
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert len(http.get(output).content) == size


def test_account_faults(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("account", status=503, count=2)
    url = segmind_emulator.account_url + "/inference-request/request-history"
    assert [http.get(url, headers=H).status_code for _ in range(3)] == [503, 503, 200]
