"""Every fault knob: errors for N calls or with a probability, delays, drops, lost answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

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
    ],
)
def test_bad_fault_rules_are_refused(segmind_emulator: SegmindEmulator, rule: dict[str, object]) -> None:
    with pytest.raises(EmulatorControlError):
        segmind_emulator._call("POST", "/faults", rule)


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
