"""pytest fixtures: load with `pytest_plugins = ["segmind_provider.testing.emulator.pytest_plugin"]`.

One emulator per test session (starting one costs a few milliseconds, but a
session-wide one keeps ports stable); each test gets it reset to the startup
options, with a 100x time scale so a flux-1.1-pro image "takes" about 0.14 s.
Per-test options go in a marker: `@pytest.mark.segmind_emulator(credits=0)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .runner import SegmindEmulator

FAST_TIME_SCALE = 0.01


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "segmind_emulator(**options): runtime options for the segmind_emulator fixture"
    )


def _session() -> Iterator[SegmindEmulator]:
    """The session's emulator (thread mode); prefer `segmind_emulator`, which resets it per test."""
    with SegmindEmulator(time_scale=FAST_TIME_SCALE) as emu:
        yield emu


def _emulator(segmind_emulator_session: SegmindEmulator, request: Any) -> SegmindEmulator:
    """A freshly reset emulator; options from a `segmind_emulator` marker are applied on top."""
    emu = segmind_emulator_session
    emu.reset()
    marker = request.node.get_closest_marker("segmind_emulator")
    if marker is not None and marker.kwargs:
        emu.configure(**marker.kwargs)
    return emu


def _emulator_connection(segmind_emulator: SegmindEmulator, monkeypatch: Any) -> SegmindEmulator:
    """Also point Airflow's `segmind_default` connection (and SEGMIND_API_KEY) at the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", segmind_emulator.connection_json())
    monkeypatch.setenv("SEGMIND_API_KEY", segmind_emulator.api_key)
    return segmind_emulator


try:
    import pytest
except ImportError:  # only pytest loads this plugin; without pytest it has nothing to register
    pass
else:
    segmind_emulator_session = pytest.fixture(scope="session", name="segmind_emulator_session")(_session)
    segmind_emulator = pytest.fixture(name="segmind_emulator")(_emulator)
    segmind_emulator_connection = pytest.fixture(name="segmind_emulator_connection")(_emulator_connection)
