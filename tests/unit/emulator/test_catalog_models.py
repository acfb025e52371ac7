"""Every catalog model is served from its entry: parameters checked from the data, its time, its
price, and outputs that show their inputs. The tests read the entries as data too."""

from __future__ import annotations

import io
from typing import Any

import av
import httpx
import pytest
from emulator_helpers import (
    KEY,
    Upload,
    catalog_entries,
    entry_for,
    file_value,
    media_fields,
    product_png,
    run_to_completion,
    valid_payload,
)
from PIL import Image

from segmind_provider.testing.emulator import SegmindEmulator

H = {"x-api-key": KEY}
ENTRIES = catalog_entries()


def fetch_image(http: httpx.Client, url: str) -> Image.Image:
    response = http.get(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def test_every_catalog_entry_is_served_with_its_time_and_price(segmind_emulator: SegmindEmulator) -> None:
    served = segmind_emulator.config()["models"]
    assert ENTRIES, "the catalog is empty"
    for slug, entry in ENTRIES.items():
        spec = served[slug]
        assert (spec["task"], spec["catalog"], spec["output"]) == (
            entry["task"],
            True,
            entry["output"]["kind"],
        )
        assert (spec["latency"], spec["cost"]) == (entry["typical_seconds"], entry["price_usd"])


@pytest.mark.parametrize("slug", sorted(ENTRIES))
def test_each_model_runs_its_typical_time_scaled(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload, slug: str
) -> None:
    entry = ENTRIES[slug]
    segmind_emulator.configure(time_scale=10.0)  # the clock is moved by hand: wide margins, no sleeping
    body = http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=valid_payload(entry, upload), headers=H)
    assert body.status_code == 200, body.text
    status_url = body.json()["status_url"]
    segmind_emulator.advance(entry["typical_seconds"] * 10 * 0.8)  # jitter is at most 15 %
    assert http.get(status_url, headers=H).json()["status"] == "PROCESSING"
    segmind_emulator.advance(entry["typical_seconds"] * 10 * 0.4)
    done = http.get(status_url, headers=H).json()
    assert done["status"] == "COMPLETED"
    assert (
        abs(done["metrics"]["inference_time"] - entry["typical_seconds"])
        <= entry["typical_seconds"] * 0.15 + 0.01
    )


@pytest.mark.parametrize("slug", sorted(ENTRIES))
def test_each_call_costs_the_entry_price_and_406_when_short(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload, slug: str
) -> None:
    price = ENTRIES[slug]["price_usd"]
    payload = valid_payload(ENTRIES[slug], upload)
    segmind_emulator.configure(credits=round(price * 1.5, 6))
    credits_url = f"{segmind_emulator.base_url}/v1/get-user-credits"
    assert http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=payload, headers=H).status_code == 200
    assert http.get(credits_url, headers=H).json()["credits"] == pytest.approx(price * 0.5, abs=1e-6)
    short = http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=payload, headers=H)
    assert (short.status_code, short.json()["error"]) == (406, "Insufficient credits")
    assert len(segmind_emulator.requests(model=slug)) == 1


def _invalid_values(param: dict[str, Any]) -> list[Any]:
    """Values the entry's own data forbids for one parameter."""
    kind = param["type"]
    wrong_type = {"string": 123, "integer": "1", "number": "one", "boolean": "yes", "array": "x"}[kind]
    values: list[Any] = [wrong_type]
    if "enum" in param:
        values.append("not-an-option" if kind == "string" else max(param["enum"]) + 1)
    if param.get("minimum") is not None:
        values.append(param["minimum"] - 1)
    if param.get("maximum") is not None:
        values.append(param["maximum"] + 1)
    if param.get("multiple_of") and not param.get("round_to_multiple"):
        values.append(param["multiple_of"] * 2 + 1)
    if param.get("media"):
        values.append("not a url" if param.get("encoding", "url") == "url" else "https://example.com/a.png")
    return values


CASES = [
    pytest.param(slug, name, value, id=f"{slug}-{name}-{value!r}"[:80])
    for slug, entry in sorted(ENTRIES.items())
    for name, param in entry["parameters"].items()
    for value in [*_invalid_values(param), *(["<missing>"] if param.get("required") else [])]
]


@pytest.mark.parametrize(("slug", "name", "value"), CASES)
def test_entry_data_decides_what_is_refused(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload, slug: str, name: str, value: Any
) -> None:
    segmind_emulator.configure(credits=100)
    payload = valid_payload(ENTRIES[slug], upload)
    if value == "<missing>":
        payload.pop(name)
    else:
        payload[name] = value
    response = http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=payload, headers=H)
    assert response.status_code == 400, (payload, response.text)
    problems = response.json()["error"].split("; ")
    assert any(p.startswith(f"{name}:") for p in problems), problems
    assert segmind_emulator.requests() == []
    assert segmind_emulator.config()["credits_remaining"] == 100


def test_background_remover_returns_the_input_with_a_transparent_background(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = entry_for("background-removal")
    source = product_png((400, 300))
    result = run_to_completion(http, segmind_emulator, entry["slug"], valid_payload(entry, upload, source))
    image = fetch_image(http, result["output"])
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (400, 300))
    assert image.getpixel((5, 5))[3] == 0  # the grey backdrop is gone
    assert image.getpixel((200, 150)) == (200, 30, 30, 255)  # the product is kept as it was


def test_upscaler_returns_the_input_enlarged(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = entry_for("upscale")
    payload = valid_payload(entry, upload, product_png((200, 150)))
    factor_field = next(
        n for n in ("scale", "upscale_factor", "scale_factor", "factor") if n in entry["parameters"]
    )
    for factor, size in ((None, (400, 300)), (4, (800, 600))):
        if factor is not None:
            payload[factor_field] = factor
        image = fetch_image(http, run_to_completion(http, segmind_emulator, entry["slug"], payload)["output"])
        assert image.size == size
        assert image.getpixel((size[0] // 2, size[1] // 2))[:3] == (200, 30, 30)


def test_edit_model_reworks_the_input_with_its_prompt_drawn_on(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = entry_for("image-edit")
    (field, param), *_ = media_fields(entry).items()
    payload = {
        "prompt": "the box on a beach at dusk",
        field: file_value(param, product_png((400, 300)), upload),
    }
    image = fetch_image(
        http, run_to_completion(http, segmind_emulator, entry["slug"], payload)["output"]
    ).convert("RGB")
    assert image.size == (400, 300)  # match_input_image, the entry's default
    red, green, _ = image.getpixel((200, 200))
    assert red > 120 and green < 100  # the red product is still there under the grade
    band = [image.getpixel((x, y)) for x in range(0, 400, 2) for y in range(0, 30)]
    assert sum(p == (0, 0, 0) for p in band) > len(band) // 2  # the prompt's band at the top
    assert any(min(p) > 200 for p in band)  # with white letters in it
    other = dict(payload, prompt="something else entirely")
    assert (
        fetch_image(http, run_to_completion(http, segmind_emulator, entry["slug"], other)["output"]).tobytes()
        != image.tobytes()
    )


def test_image_to_video_model_returns_an_mp4_a_decoder_opens(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = entry_for("image-to-video")
    payload = valid_payload(entry, upload, product_png((400, 300)))
    result = run_to_completion(http, segmind_emulator, entry["slug"], payload)
    assert result["output"].endswith(".mp4")
    response = http.get(result["output"])
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(video=0)]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 400, 300)
    duration = payload.get("duration", entry["parameters"].get("duration", {}).get("default", 5))
    assert len(frames) == duration * 8
    first = frames[0].getpixel((200, 130))
    assert first[0] > 150 and first[1] < 90  # the input's red product, decoded back from H.264


def test_text_model_answers_a_caption_mentioning_the_prompt(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = entry_for("text")
    payload = valid_payload(entry, upload, product_png((320, 240)))
    payload["prompt"] = "write a caption for this red box"
    output = run_to_completion(http, segmind_emulator, entry["slug"], payload)["output"]
    assert isinstance(output, str)
    assert "write a caption for this red box" in output
    if media_fields(entry):
        assert "320x240" in output


def test_an_earlier_output_can_be_passed_on_by_url(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    removal, edit = entry_for("background-removal"), entry_for("image-edit")
    cutout = run_to_completion(http, segmind_emulator, removal["slug"], valid_payload(removal, upload))[
        "output"
    ]
    (field, param), *_ = media_fields(edit).items()
    assert param.get("encoding", "url") == "url"
    result = run_to_completion(http, segmind_emulator, edit["slug"], {"prompt": "a beach", field: cutout})
    assert fetch_image(http, result["output"]).size == (400, 300)


def test_inputs_elsewhere_or_unknown_are_refused_without_a_fetch(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    edit = entry_for("image-edit")
    (field, _), *_ = media_fields(edit).items()
    url = f"{segmind_emulator.base_url}/v2/{edit['slug']}"
    media = segmind_emulator.media_url
    for value, message in (
        ("https://example.com/photo.png", "never fetches"),
        (f"{media}/media/assets/0123456789abcdef.png", "no uploaded file"),
        (f"{media}/media/no-such-request.png", "no output"),
        (upload(b"%PDF-1.4 not an image", "application/pdf"), "expects image"),
    ):
        response = http.post(url, json={"prompt": "x", field: value}, headers=H)
        assert response.status_code == 400
        assert response.json()["error"].startswith(f"{field}: ") and message in response.json()["error"]
    assert segmind_emulator.requests() == []


def test_base64_fields_take_only_image_data(
    http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload
) -> None:
    entry = next(
        e for e in ENTRIES.values() if any(p.get("encoding") == "base64" for p in media_fields(e).values())
    )
    field = next(
        n for n, p in media_fields(entry).items() if p.get("encoding") == "base64" and p.get("required")
    )
    payload = valid_payload(entry, upload)
    payload[field] = "aGVsbG8gd29ybGQ="  # "hello world"
    response = http.post(f"{segmind_emulator.base_url}/v2/{entry['slug']}", json=payload, headers=H)
    assert response.status_code == 400
    assert "not a readable image" in response.json()["error"]


def test_rules_from_the_entry(http: httpx.Client, segmind_emulator: SegmindEmulator, upload: Upload) -> None:
    """`max_when_present` is a 400 when the file is given; `only_with` fields are ignored (as the service does)."""
    for slug, entry in ENTRIES.items():
        for rule in entry["rules"]:
            if rule["kind"] != "max_when_present":
                continue
            payload = {**valid_payload(entry, upload), rule["field"]: rule["maximum"] + 1}
            payload[rule["present"][0]] = file_value(
                entry["parameters"][rule["present"][0]], product_png(), upload
            )
            response = http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=payload, headers=H)
            assert response.status_code == 400
            assert response.json()["error"].startswith(f"{rule['field']}: must be at most {rule['maximum']}")
            payload.pop(rule["present"][0])
            if not entry["parameters"][rule["present"][0]].get("required"):
                response = http.post(f"{segmind_emulator.base_url}/v2/{slug}", json=payload, headers=H)
                assert response.status_code == 200, response.text
