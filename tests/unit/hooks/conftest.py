"""Fixtures for the hook tests: a connection pointing at a loopback server, recorded retry waits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from segmind_hook_testlib import CONN_ID, KEY, RawServer

from segmind_provider.runtime import reset_process_state


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no key in the environment and fresh per-key budgets."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    monkeypatch.delenv("SEGMIND_BASE_URL", raising=False)
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    yield


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Virtual time: retry/poll sleeps are recorded (not slept) and advance the budgets' clock.

    Budget waits advance the same clock but are not recorded, so ``waits`` holds only retry/poll waits.
    """
    recorded: list[float] = []
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)
        offset[0] += seconds

    async def fake_asleep(seconds: float) -> None:
        fake_sleep(seconds)

    def budget_sleep(seconds: float) -> None:
        offset[0] += seconds

    async def budget_asleep(seconds: float) -> None:
        offset[0] += seconds

    reset_process_state(
        clock=clock, sleep=fake_sleep, asleep=fake_asleep, pace=budget_sleep, apace=budget_asleep
    )
    return recorded


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Create the ``segmind_test`` connection through ``AIRFLOW_CONN_SEGMIND_TEST`` (JSON form)."""

    def make(host: str | None, password: str | None = KEY, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "segmind", "extra": extra}
        if host is not None:
            conn["host"] = host
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
        return CONN_ID

    return make


@pytest.fixture
def base_url(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


@pytest.fixture
def conn_id(make_conn: Callable[..., str], base_url: str, waits: list[float]) -> str:
    """A connection to the loopback server with the default retry settings (sleeps recorded, not slept)."""
    return make_conn(base_url)


@pytest.fixture(scope="session")
def _other_server_session() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def other_server(_other_server_session: HTTPServer) -> Iterator[HTTPServer]:
    """A second server on another port: stands for the media host / a redirect target."""
    yield _other_server_session
    _other_server_session.clear()


@pytest.fixture
def raw_server() -> Iterator[Callable[[list[bytes | None]], RawServer]]:
    servers: list[RawServer] = []

    def make(script: list[bytes | None]) -> RawServer:
        server = RawServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
