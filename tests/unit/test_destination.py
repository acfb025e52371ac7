"""A hostile or unusable ``output_path`` is refused before any spend (issue 10, bad input).

Through the real operator against the emulator: each refusal happens with zero HTTP requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from segmind_provider.destination import check_output_path
from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.outputs import store_bytes
from segmind_provider.testing.emulator.runner import SegmindEmulator

TRAVERSALS = [
    "../escape.png",
    "out/../../etc/cron.d/x",
    "/srv/images/../../root/x.png",
    "file:///srv/images/%2e%2e/x.png",
    "memory://bucket/run/../other/x.png",
    "s3://bucket/run/..%2Fx.png",
    "out/\x00.png",
]
NO_STORAGE = [
    "foo://bucket/x.png",  # no filesystem at all
    "s3://bucket/x.png",  # s3fs / the Amazon provider not installed here
    "gcs://bucket/x.png",
    "http://media.example/upload/x.png",  # http(s) cannot be written to
    "https://media.example/upload/x.png",
]


def operator(output_path: str) -> SegmindOperator:
    return SegmindOperator(
        task_id="generate",
        model="flux-1.1-pro",
        payload={"prompt": "a lighthouse", "output_format": "png"},
        output_path=output_path,
        deferrable=True,
    )


@pytest.mark.parametrize("output_path", TRAVERSALS + NO_STORAGE)
def test_a_hostile_or_unusable_output_path_fails_before_any_request(
    emulator: SegmindEmulator, make_context: Any, output_path: str
) -> None:
    with pytest.raises(SegmindValidationError) as info:
        operator(output_path).execute(make_context())
    assert isinstance(info.value, AirflowFailException)  # no retry: the same path fails again
    assert emulator.calls() == []  # nothing submitted, nothing paid


@pytest.mark.parametrize("output_path", TRAVERSALS)
def test_the_traversal_rule_names_the_problem(output_path: str) -> None:
    with pytest.raises(SegmindValidationError, match=r"climbs out of its folder \('\.\.'\) or holds a NUL"):
        check_output_path(output_path, "png")


@pytest.mark.parametrize("output_path", NO_STORAGE)
def test_the_storage_rule_names_the_scheme(output_path: str) -> None:
    scheme = output_path.partition(":")[0]
    with pytest.raises(SegmindValidationError, match=f"{scheme}"):
        check_output_path(output_path, "png")


@pytest.mark.parametrize(
    "output_path",
    ["images/hero.png", "/srv/images/v1..v2.png", "file:///srv/images/hero", "memory://bucket/run/hero.png"],
)
def test_ordinary_paths_pass(output_path: str) -> None:
    check_output_path(output_path, "png")


def test_a_traversal_is_refused_at_store_time_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inner").mkdir()
    monkeypatch.chdir(tmp_path / "inner")
    with pytest.raises(SegmindValidationError):
        store_bytes(b"\x89PNG\r\n\x1a\n", "image/png", "../escaped.png")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["inner"]
