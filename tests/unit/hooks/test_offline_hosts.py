"""Issue 20, defect 1: a connection to a non-Segmind API never sends files or the key to Segmind.

The storage and account URLs follow a non-Segmind ``host`` (the emulator's layout: path prefixes on
the API's base URL) unless the connection sets them; a Segmind host keeps Segmind's own.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from segmind_provider.hooks.connection import (
    DEFAULT_ACCOUNT_URL,
    DEFAULT_STORAGE_URL,
    settings_from,
)
from segmind_provider.testing.emulator.control import service_urls

LOCAL = "http://127.0.0.1:8765"


def conn(host: str | None, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(host=host, port=None, password="any-key", extra_dejson=extra)


@pytest.mark.parametrize(
    "host", [None, "", "https://api.segmind.com", "api.segmind.com", "https://api.segmind.com/v1"]
)
def test_segmind_hosts_keep_segmind_storage_and_account(host: str | None) -> None:
    settings = settings_from(conn(host), "segmind_default", {})
    assert (settings.storage_url, settings.account_url) == (DEFAULT_STORAGE_URL, DEFAULT_ACCOUNT_URL)


@pytest.mark.parametrize(
    "host", [LOCAL, "http://localhost:9000/segmind", "https://segmind-proxy.example.com"]
)
def test_a_non_segmind_host_takes_storage_and_account_with_it(host: str) -> None:
    settings = settings_from(conn(host), "segmind_default", {})
    assert settings.storage_url == settings.base_url + "/storage"
    assert settings.account_url == settings.base_url + "/account"
    assert all("segmind.com" not in url for url in (settings.storage_url, settings.account_url))


def test_the_emulator_serves_where_a_local_host_points() -> None:
    """The client's rule and the emulator's layout agree (they share no code, only this contract)."""
    settings = settings_from(conn(LOCAL), "segmind_default", {})
    urls = service_urls(LOCAL)
    assert (settings.storage_url, settings.account_url) == (urls["storage_url"], urls["account_url"])


def test_explicit_storage_and_account_urls_win() -> None:
    settings = settings_from(
        conn(LOCAL, storage_url="http://127.0.0.1:9001", account_url="https://api.spotprod.segmind.com"),
        "segmind_default",
        {},
    )
    assert settings.storage_url == "http://127.0.0.1:9001"
    assert settings.account_url == DEFAULT_ACCOUNT_URL


def test_the_sdk_style_environment_fallback_follows_too() -> None:
    settings = settings_from(
        None, "segmind_default", {"SEGMIND_API_KEY": "k", "SEGMIND_BASE_URL": LOCAL + "/v1"}
    )
    assert settings.base_url == LOCAL
    assert settings.storage_url == LOCAL + "/storage"
    assert settings.account_url == LOCAL + "/account"


def test_a_local_host_without_time_scale_says_how_to_scale(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="segmind_provider.hooks.connection"):
        settings_from(conn(LOCAL), "segmind_default", {})
    (record,) = [r for r in caplog.records if "time_scale" in r.getMessage()]
    assert "segmind_default" in record.getMessage() and "--time-scale" in record.getMessage()


@pytest.mark.parametrize(
    ("host", "extra"), [(None, {}), (LOCAL, {"time_scale": 0.05}), (LOCAL, {"time_scale": 1})]
)
def test_no_time_scale_note_when_it_is_set_or_the_host_is_segmind(
    caplog: pytest.LogCaptureFixture, host: str | None, extra: dict[str, Any]
) -> None:
    with caplog.at_level(logging.INFO, logger="segmind_provider.hooks.connection"):
        settings_from(conn(host, **extra), "segmind_default", {})
    assert not [r for r in caplog.records if "time_scale" in r.getMessage()]
