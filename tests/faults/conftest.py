"""The fault suite's world: the emulator in its own process, the connections, and the report.

``SEGMIND_FAULT_REPORT=path.json pytest tests/faults`` also writes every scenario's figures there
(and ``path.md``, the table docs/reliability.md shows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fault_harness import TIME_SCALE, Figures
from fault_proxy import RewritingProxy

from segmind_provider.testing.emulator.runner import SegmindEmulator

KEY = "fault-suite-key"
REPORT_ENV = "SEGMIND_FAULT_REPORT"
FIGURES: list[Figures] = []

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="session")
def fault_emulator() -> Iterator[SegmindEmulator]:
    """One emulator process for the suite; only ``KEY`` is accepted (so a bad key gets 401)."""
    with SegmindEmulator(
        process=True, time_scale=TIME_SCALE, api_keys=[KEY], api_key=KEY, fault_seed=10
    ) as emu:
        yield emu


@pytest.fixture(scope="session")
def proxy(fault_emulator: SegmindEmulator) -> Iterator[RewritingProxy]:
    with RewritingProxy(fault_emulator.base_url) as running:
        yield running


def connection(emu: SegmindEmulator, **changes: Any) -> str:
    """The emulator's connection JSON, with some fields or extras changed."""
    conn = json.loads(emu.connection_json(KEY))
    extra = conn.setdefault("extra", {})
    for name, value in changes.items():
        if name in ("host", "password"):
            conn[name] = value
        else:
            extra[name] = value
    return json.dumps(conn)


@pytest.fixture
def emulator(
    fault_emulator: SegmindEmulator, proxy: RewritingProxy, monkeypatch: pytest.MonkeyPatch
) -> SegmindEmulator:
    """The emulator reset, and the connections the scenarios use pointing at it.

    ``segmind_default``; ``segmind_slow`` (1 s read timeout); ``segmind_bad_key``; ``segmind_proxy``
    (through the rewriting proxy, history straight from the emulator); ``segmind_storm`` (the proxy,
    with a request budget above the emulator's rate limit).
    """
    fault_emulator.reset()
    proxy.clear()
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", connection(fault_emulator))
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_SLOW", connection(fault_emulator, timeout=1))
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_BAD_KEY", connection(fault_emulator, password="not-the-key"))
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_PROXY", connection(fault_emulator, host=proxy.base_url))
    # A budget set above the server's limit: the 429s keep coming (a budget left to learn the limit
    # from the first 429 slows down instead, and the storm ends).
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_STORM",
        connection(fault_emulator, host=proxy.base_url, requests_per_minute=600),
    )
    return fault_emulator


@pytest.fixture
def record() -> Any:
    """Keep a scenario's figures for the report."""
    return FIGURES.append


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target or not FIGURES:
        return
    path = Path(target)
    path.write_text(json.dumps([asdict(f) for f in FIGURES], indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(FIGURES))


def markdown(figures: list[Figures]) -> str:
    head = (
        "| scenario | injected | what happened | tasks | jobs paid | completed | failed, clear reason "
        "| duplicate jobs | lost / partial outputs | extra requests |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = [
        f"| {f.scenario} | {f.injected} | {f.happened} | {f.tasks} | {f.jobs} | {f.completed} "
        f"| {f.failed_clear} | {f.duplicates} | {f.lost} / {f.partial} | {f.extra_requests} |"
        for f in figures
    ]
    return head + "\n".join(rows) + "\n"
