"""Load the emulator's own pytest plugin: the suite uses the fixtures users get."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import httpx
import pytest
from emulator_helpers import KEY, Upload, data_url

from segmind_provider.testing.emulator import SegmindEmulator
from segmind_provider.testing.emulator.pytest_plugin import pytest_configure as pytest_configure
from segmind_provider.testing.emulator.pytest_plugin import (
    segmind_emulator,
    segmind_emulator_connection,
    segmind_emulator_session,
)

__all__ = ["segmind_emulator", "segmind_emulator_connection", "segmind_emulator_session"]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client with no key preset, so every test says what it sends."""
    with httpx.Client(timeout=10) as client:
        yield client


class Submit(Protocol):
    def __call__(
        self, base_url: str, key: str | None = ..., model: str = ..., **params: object
    ) -> httpx.Response: ...


@pytest.fixture
def submit(http: httpx.Client) -> Submit:
    """POST /v2/{model} with a prompt filled in; `key=None` sends no key."""

    def call(
        base_url: str, key: str | None = KEY, model: str = "flux-1.1-pro", **params: object
    ) -> httpx.Response:
        headers = {"x-api-key": key} if key else {}
        params.setdefault("prompt", "a lighthouse at dawn")
        return http.post(f"{base_url}/v2/{model}", json=params, headers=headers)

    return call


@pytest.fixture
def upload(http: httpx.Client, segmind_emulator: SegmindEmulator) -> Upload:
    """Upload one file to the emulator's storage; returns its media URL."""

    def call(data: bytes, content_type: str = "image/png") -> str:
        response = http.post(
            segmind_emulator.storage_url + "/upload-asset",
            json={"data_urls": [data_url(data, content_type)]},
            headers={"x-api-key": KEY},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["file_urls"][0])

    return call
