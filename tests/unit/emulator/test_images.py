"""Images: determinism, sizes for every aspect ratio, formats, laziness."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from segmind_provider.testing.emulator import ASPECT_RATIOS, SegmindEmulator
from segmind_provider.testing.emulator.render import seed_from_request_id
from segmind_provider.testing.emulator.validation import round16

if TYPE_CHECKING:
    from .conftest import Submit

KEY = "emulator-test-key"
H = {"x-api-key": KEY}


def fetch(http: httpx.Client, emu: SegmindEmulator, body: dict[str, str]) -> bytes:
    emu.advance(60)
    output = http.get(body["response_url"], headers=H).json()["output"]
    response = http.get(output)
    assert response.status_code == 200
    return response.content


def test_same_inputs_same_bytes_other_seed_other_bytes(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    base = segmind_emulator.base_url
    params = {"prompt": "a quiet harbour", "seed": 42, "output_format": "png"}
    first = fetch(http, segmind_emulator, submit(base, **params).json())
    segmind_emulator.reset()  # also empties the render cache: the second image is drawn again
    second = fetch(http, segmind_emulator, submit(base, **params).json())
    assert first == second
    other_seed = fetch(http, segmind_emulator, submit(base, **{**params, "seed": 43}).json())
    other_prompt = fetch(
        http, segmind_emulator, submit(base, **{**params, "prompt": "a loud harbour"}).json()
    )
    assert len({first, other_seed, other_prompt}) == 3


def test_sync_and_async_give_the_same_image(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    params = {"prompt": "same", "seed": 5, "output_format": "jpg", "output_quality": 50}
    via_v2 = fetch(http, segmind_emulator, submit(segmind_emulator.base_url, **params).json())
    segmind_emulator.configure(time_scale=0.0001)
    via_v1 = http.post(f"{segmind_emulator.base_url}/v1/flux-1.1-pro", json=params, headers=H).content
    assert via_v1 == via_v2


def test_no_seed_derives_one_from_the_request_id(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    base = segmind_emulator.base_url
    a = submit(base, output_format="jpg").json()
    b = submit(base, output_format="jpg").json()
    first_a = fetch(http, segmind_emulator, a)
    assert fetch(http, segmind_emulator, a) == first_a
    assert fetch(http, segmind_emulator, b) != first_a
    assert seed_from_request_id(a["request_id"]) == seed_from_request_id(a["request_id"])


def sync_image(http: httpx.Client, emu: SegmindEmulator, **params: object) -> Image.Image:
    emu.configure(time_scale=0.0001)
    response = http.post(f"{emu.base_url}/v1/flux-1.1-pro", json=params, headers=H)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_quality_changes_the_bytes(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    sizes = []
    for quality in (10, 95):
        params = {"prompt": "q", "output_format": "jpg", "output_quality": quality, "seed": 1}
        response = http.post(f"{segmind_emulator.base_url}/v1/flux-1.1-pro", json=params, headers=H)
        sizes.append(len(response.content))
    assert sizes[0] < sizes[1]


FLUX_RATIOS = ["1:1", "16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5"]


@pytest.mark.parametrize("aspect_ratio", sorted(ASPECT_RATIOS))
def test_every_named_ratio_is_about_a_megapixel(aspect_ratio: str) -> None:
    width, height = ASPECT_RATIOS[aspect_ratio]
    assert width % 16 == 0 and height % 16 == 0
    assert 0.97 <= width * height / 1024**2 <= 1.01
    w, h = (int(x) for x in aspect_ratio.split(":"))
    assert abs(width / height - w / h) < 0.02


@pytest.mark.parametrize("aspect_ratio", FLUX_RATIOS)
def test_every_aspect_ratio_size(
    http: httpx.Client, segmind_emulator: SegmindEmulator, aspect_ratio: str
) -> None:
    image = sync_image(
        http, segmind_emulator, prompt="size check", aspect_ratio=aspect_ratio, output_format="jpg"
    )
    assert image.size == ASPECT_RATIOS[aspect_ratio]


def test_one_to_one_is_exactly_1024() -> None:
    assert ASPECT_RATIOS["1:1"] == (1024, 1024)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1024, 1024, (1024, 1024)),
        (257, 1440, (256, 1440)),
        (1000, 600, (1008, 608)),
        (264, 1432, (272, 1440)),
    ],
)
def test_custom_size_rounds_to_16(
    http: httpx.Client, segmind_emulator: SegmindEmulator, width: int, height: int, expected: tuple[int, int]
) -> None:
    assert (round16(width), round16(height)) == expected
    image = sync_image(
        http,
        segmind_emulator,
        prompt="c",
        aspect_ratio="custom",
        width=width,
        height=height,
        output_format="jpg",
    )
    assert image.size == expected


def test_width_is_ignored_without_custom(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    """The catalog's `only_with` rule: the service ignores width/height unless aspect_ratio=custom."""
    image = sync_image(http, segmind_emulator, prompt="x", aspect_ratio="16:9", width=512, height=512)
    assert image.size == (1360, 768)


def test_rendering_is_lazy_and_cached(
    http: httpx.Client, segmind_emulator: SegmindEmulator, submit: Submit
) -> None:
    bodies = [submit(segmind_emulator.base_url, output_format="jpg").json() for _ in range(200)]
    segmind_emulator.advance(3000)
    for body in bodies[:20]:
        assert http.get(body["response_url"], headers=H).json()["status"] == "COMPLETED"
    assert segmind_emulator.stats()["renders"] == 0
    fetch(http, segmind_emulator, bodies[0])
    fetch(http, segmind_emulator, bodies[0])
    stats = segmind_emulator.stats()
    assert (stats["renders"], stats["cache_hits"]) == (1, 1)
