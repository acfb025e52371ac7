"""The official `segmind` SDK (1.3.0), unchanged, cannot tell the emulator from the real service."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import InferenceFailed

from segmind_provider.testing.emulator import SegmindEmulator


@pytest.fixture
def client(segmind_emulator: SegmindEmulator) -> SegmindClient:
    return SegmindClient(api_key="k", base_url=segmind_emulator.base_url + "/v1")


def test_submit_async_wait_returns_result(client: SegmindClient, segmind_emulator: SegmindEmulator) -> None:
    job = client.submit_async("flux-1.1-pro", prompt="an astronaut among sunflowers", seed=12345)
    assert job.submit_response["status"] == "QUEUED"
    assert job.status_url.startswith(segmind_emulator.base_url)
    result = job.wait(timeout=30, interval=0.02)
    assert result["status"] == "COMPLETED"
    assert result["error"] is None
    assert 14.05 * 0.85 <= result["metrics"]["inference_time"] <= 14.05 * 1.15
    assert result["output"].startswith(segmind_emulator.media_url + "/")
    image = Image.open(io.BytesIO(httpx.get(result["output"]).content))
    assert (image.format, image.size) == ("WEBP", (1024, 1024))


@pytest.mark.parametrize(
    ("fmt", "pil_format", "content_type"),
    [("webp", "WEBP", "image/webp"), ("jpg", "JPEG", "image/jpeg"), ("png", "PNG", "image/png")],
)
def test_run_sync_returns_image_bytes(
    client: SegmindClient, fmt: str, pil_format: str, content_type: str
) -> None:
    response = client.run_sync(
        "flux-1.1-pro", prompt="a red bicycle", aspect_ratio="3:2", output_format=fmt, seed=7
    )
    assert response.headers["content-type"] == content_type
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == (pil_format, (1248, 832))


def test_run_is_submit_and_wait(client: SegmindClient, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.configure(time_scale=0.0001)
    assert client.run("flux-1.1-pro", prompt="x")["status"] == "COMPLETED"


def test_content_block_raises_inference_failed(
    client: SegmindClient, segmind_emulator: SegmindEmulator
) -> None:
    segmind_emulator.configure(blocked_words=["forbidden"])
    job = client.submit_async("flux-1.1-pro", prompt="a Forbidden landscape")
    with pytest.raises(InferenceFailed) as info:
        job.wait(timeout=30, interval=0.02)
    assert info.value.detail is not None
    assert "content moderation" in info.value.detail.lower()
    assert info.value.status_body["status"] == "FAILED"
    assert job.result()["error"] == info.value.detail


def test_expired_id_gives_404(client: SegmindClient, segmind_emulator: SegmindEmulator) -> None:
    job = client.submit_async("flux-1.1-pro", prompt="short-lived")
    segmind_emulator.advance(3600 + 60)
    with pytest.raises(SegmindError) as info:
        job.status()
    assert info.value.status == 404
    with pytest.raises(SegmindError) as info:
        job.result()
    assert info.value.status == 404


def test_sdk_errors_carry_the_detail(client: SegmindClient) -> None:
    with pytest.raises(SegmindError) as info:
        client.submit_async("flux-1.1-pro", prompt="x", output_format="gif")
    assert info.value.status == 400
    assert info.value.detail is not None and "output_format" in info.value.detail
