"""The pytest plugin users load: a reset, fast emulator per test, options from a marker."""

from __future__ import annotations

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
    conn = json.loads(os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"])
    assert conn == {
        "conn_type": "segmind",
        "host": segmind_emulator_connection.base_url,
        "password": segmind_emulator_connection.api_key,
    }
    assert os.environ["SEGMIND_API_KEY"] == segmind_emulator_connection.api_key
