"""Storage: `POST {storage_url}/upload-asset` as the official SDK sends it; files served from the media host."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import pytest
from emulator_helpers import KEY, data_url, product_png
from PIL import Image
from segmind import SegmindClient

from segmind_provider.testing.emulator import SegmindEmulator

H = {"x-api-key": KEY}


def post(
    http: httpx.Client, emu: SegmindEmulator, body: object, headers: dict[str, str] = H
) -> httpx.Response:
    return http.post(emu.storage_url + "/upload-asset", json=body, headers=headers)


def test_upload_answers_file_urls_fetchable_from_the_media_host(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    png = product_png()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "JPEG")
    jpeg_bytes = buffer.getvalue()
    response = post(
        http, segmind_emulator, {"data_urls": [data_url(png), data_url(jpeg_bytes, "image/jpeg")]}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"file_urls", "message"}
    first, second = body["file_urls"]
    assert first.startswith(segmind_emulator.media_url + "/media/assets/") and first.endswith(".png")
    assert second.endswith(".jpg")
    fetched = http.get(first)
    assert (fetched.content, fetched.headers["content-type"]) == (png, "image/png")
    assert http.get(second).content == jpeg_bytes


def test_call_log_counts_uploads_by_file_and_shows_where_the_key_went(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    png = product_png()
    urls = [
        post(http, segmind_emulator, {"data_urls": [data_url(png)]}).json()["file_urls"][0] for _ in range(2)
    ]
    assert urls[0] != urls[1]  # each upload is stored anew, as Segmind does: the log shows the repeat
    http.get(urls[0])
    uploads = segmind_emulator.calls(endpoint="upload")
    assert [(c["method"], c["path"], c["status"], c["key_present"]) for c in uploads] == [
        ("POST", "/storage/upload-asset", 200, True)
    ] * 2
    files = [f for c in uploads for f in c["files"]]
    assert [f["sha256"] for f in files] == [hashlib.sha256(png).hexdigest()] * 2
    assert [f["url"] for f in files] == urls
    assert (files[0]["size"], files[0]["content_type"]) == (len(png), "image/png")
    assert [c["key_present"] for c in segmind_emulator.calls(endpoint="media")] == [False]
    assert segmind_emulator.stats()["uploads"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "data_urls: required"),
        ({"data_urls": []}, "data_urls: required"),
        ({"data_urls": ["https://example.com/a.png"]}, "data_urls[0]: must be a data URL"),
        (
            {"data_urls": ["data:image/png,abc"]},
            "data_urls[0]: must be a data URL with a media type and ;base64",
        ),
        ({"data_urls": ["data:image/png;base64,@@@"]}, "data_urls[0]: the base64 data does not decode"),
        (
            {"data_urls": [data_url(b"just some text")]},
            "data_urls[0]: declared image/png but the data is not",
        ),
        ({"data_urls": [data_url(product_png()), 5]}, "data_urls[1]: must be a data URL"),
    ],
)
def test_bad_uploads_are_400_naming_the_item_and_store_nothing(
    http: httpx.Client, segmind_emulator: SegmindEmulator, body: dict[str, object], message: str
) -> None:
    response = post(http, segmind_emulator, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert segmind_emulator.stats()["uploads"] == 0


def test_upload_size_cap_and_key(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.configure(max_upload_mb=0.001)
    response = post(http, segmind_emulator, {"data_urls": [data_url(product_png((600, 600)))]})
    assert response.status_code == 400 and "over the 0.0 MB limit" in response.json()["error"]
    assert (
        post(http, segmind_emulator, {"data_urls": [data_url(b"x", "text/plain")]}, headers={}).status_code
        == 401
    )


def test_upload_faults(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    segmind_emulator.add_fault("upload", status=502, count=1)
    assert post(http, segmind_emulator, {"data_urls": [data_url(product_png())]}).status_code == 502
    assert segmind_emulator.stats()["uploads"] == 0
    assert post(http, segmind_emulator, {"data_urls": [data_url(product_png())]}).status_code == 200


def test_official_sdk_files_upload(segmind_emulator: SegmindEmulator, tmp_path: Path) -> None:
    """`SegmindClient.files.upload` (SDK 1.3.0) with its storage URL pointed at the emulator."""
    path = tmp_path / "product.png"
    path.write_bytes(product_png())
    files = SegmindClient(api_key=KEY, base_url=segmind_emulator.base_url + "/v1").files
    files.STORAGE_BASE_URL = segmind_emulator.storage_url
    result = files.upload([path, path])
    assert len(result["file_urls"]) == 2
    assert httpx.get(result["file_urls"][1]).content == path.read_bytes()
    assert [c["key_present"] for c in segmind_emulator.calls(endpoint="upload")] == [True]
