"""The pytest plugin users load: a reset, fast emulator per test, options from a marker."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from segmind_provider.testing.emulator import SegmindEmulator


def test_fixture_is_fast_and_fresh(segmind_emulator: SegmindEmulator) -> None:
    config = segmind_emulator.config()
    assert config["time_scale"] == 0.01
    assert segmind_emulator.calls() == []
    segmind_emulator.configure(credits=0)


def test_reset_between_tests(segmind_emulator: SegmindEmulator) -> None:
    assert segmind_emulator.config()["credits"] is None


@pytest.mark.segmind_emulator(credits=3, blocked_words=["x"])
def test_marker_options(segmind_emulator: SegmindEmulator) -> None:
    config = segmind_emulator.config()
    assert (config["credits"], config["blocked_words"]) == (3.0, ["x"])


def test_connection_fixture_points_airflow_at_it(segmind_emulator_connection: SegmindEmulator) -> None:
    emu = segmind_emulator_connection
    conn = json.loads(os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"])
    assert conn == {
        "conn_type": "segmind",
        "host": emu.base_url,
        "password": emu.api_key,
        "extra": {"storage_url": emu.storage_url, "account_url": emu.account_url, "time_scale": 0.01},
    }
    assert os.environ["SEGMIND_API_KEY"] == emu.api_key
    # The extras are live addresses: storage takes an upload, the account lists the key's requests.
    headers = {"x-api-key": conn["password"]}
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    upload = httpx.post(
        conn["extra"]["storage_url"] + "/upload-asset", json={"data_urls": [png]}, headers=headers
    )
    assert upload.status_code == 200
    history = httpx.get(conn["extra"]["account_url"] + "/inference-request/request-history", headers=headers)
    assert (history.status_code, history.json()["data"]) == (200, [])


@pytest.mark.segmind_emulator(time_scale=0.5)
def test_connection_carries_the_marker_time_scale(segmind_emulator_connection: SegmindEmulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"])
    assert conn["extra"]["time_scale"] == 0.5
