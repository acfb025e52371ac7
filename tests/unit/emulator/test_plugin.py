"""The pytest plugin users load: a reset, fast emulator per test, options from a marker."""

from __future__ import annotations

import base64
import json
import os

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
        "extra": {"time_scale": 0.01},
    }
    assert os.environ["SEGMIND_API_KEY"] == emu.api_key
    # Storage and account follow the host: the hook uploads to and lists the emulator's own.
    from segmind_provider.hooks.segmind import SegmindHook

    hook = SegmindHook()
    settings = hook.get_settings()
    assert (settings.storage_url, settings.account_url) == (emu.storage_url, emu.account_url)
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    assert hook.upload(png, "image/png").startswith(emu.media_url)
    assert hook.request_history() == []


@pytest.mark.segmind_emulator(time_scale=0.5)
def test_connection_carries_the_marker_time_scale(segmind_emulator_connection: SegmindEmulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"])
    assert conn["extra"]["time_scale"] == 0.5
