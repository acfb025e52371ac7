"""The integrity check against real files of every kind (images, video, audio, 3D): each valid
variant passes, each cut or damaged copy is refused. A valid output refused would be paid for and lost, so the valid side
covers the variants encoders write (palette, 16-bit, interlaced, progressive, restart markers,
alpha, animation, lossless)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from PIL import Image
from pytest_httpserver import HTTPServer

from segmind_provider.exceptions import SegmindOutputError
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.integrity import problem
from segmind_provider.media import EXTENSIONS, MEDIA_TYPES
from segmind_provider.outputs import DEFAULT_MAX_BYTES, store_output
from segmind_provider.testing.emulator.render import draw_image
from segmind_provider.testing.emulator.transforms import upscale_png


def picture(mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Image.Image:
    return draw_image("test", "a lighthouse", 1, size).convert(mode)


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def frames(fmt: str, **options: object) -> bytes:
    images = [picture("RGB").rotate(angle) for angle in (0, 20, 40)]
    return saved(images[0], fmt, save_all=True, append_images=images[1:], duration=100, **options)


def interlaced_png(image: Image.Image) -> bytes:
    """Adam7 (Pillow reads it but does not write it): every pass, filter type 0."""
    width, height = image.size
    pixels = image.convert("RGB").tobytes()
    raw = bytearray()
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        for y in range(y0, height, dy):
            row = b"".join(
                pixels[(y * width + x) * 3 : (y * width + x) * 3 + 3] for x in range(x0, width, dx)
            )
            if row:
                raw += b"\x00" + row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def video(container: str, codec: str) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_image(picture("RGB", (64, 48)).rotate(i * 10))
            box.mux(stream.encode(frame))
        box.mux(stream.encode(None))
    return out.getvalue()


def audio(container: str, codec: str, rate: int = 44100, layout: str = "stereo") -> bytes:
    """Half a second of a 440 Hz tone, encoded by FFmpeg's own encoders and muxers (PyAV)."""
    import math

    import av

    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=rate, layout=layout)
        context = stream.codec_context
        resampler = av.AudioResampler(format=context.format.name, layout=layout, rate=rate)
        channels = context.layout.nb_channels
        step = context.frame_size or 1024
        for start in range(0, rate // 2, step):
            tone = [int(math.sin(2 * math.pi * 440 * (start + i) / rate) * 9000) for i in range(step)]
            frame = av.AudioFrame(format="s16", layout=layout, samples=step)
            frame.planes[0].update(
                struct.pack(f"<{step * channels}h", *(v for v in tone for _ in range(channels)))
            )
            frame.sample_rate = rate
            for ready in resampler.resample(frame):
                box.mux(stream.encode(ready))
        box.mux(stream.encode(None))
    return out.getvalue()


def glb() -> bytes:
    document = b'{"asset":{"version":"2.0"},"buffers":[{"byteLength":8}]}'
    document += b" " * (-len(document) % 4)
    binary = bytes(range(8))
    body = (
        struct.pack("<II", len(document), 0x4E4F534A) + document + struct.pack("<II", 8, 0x004E4942) + binary
    )
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


VALID: dict[str, tuple[str, Callable[[], bytes]]] = {
    "png rgb": ("png", lambda: saved(picture(), "PNG")),
    "png rgba": ("png", lambda: saved(picture("RGBA"), "PNG")),
    "png palette": ("png", lambda: saved(picture("P"), "PNG")),
    "png 1-bit": ("png", lambda: saved(picture("1", (101, 37)), "PNG")),
    "png grey+alpha": ("png", lambda: saved(picture("LA"), "PNG")),
    "png 16-bit": ("png", lambda: saved(picture("I;16"), "PNG")),
    "png interlaced": ("png", lambda: interlaced_png(picture(size=(37, 23)))),
    "png small idat chunks": ("png", lambda: _rechunked(saved(picture(), "PNG"), 100)),
    "jpeg baseline": ("jpeg", lambda: saved(picture(), "JPEG")),
    "jpeg progressive": ("jpeg", lambda: saved(picture(), "JPEG", progressive=True)),
    "jpeg restart markers": (
        "jpeg",
        lambda: saved(picture(size=(300, 200)), "JPEG", restart_marker_blocks=2),
    ),
    "jpeg grey": ("jpeg", lambda: saved(picture("L"), "JPEG")),
    "jpeg cmyk": ("jpeg", lambda: saved(picture("CMYK"), "JPEG")),
    "jpeg exif": ("jpeg", lambda: saved(picture(), "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 40)),
    "webp lossy": ("webp", lambda: saved(picture(), "WEBP")),
    "webp lossless": ("webp", lambda: saved(picture(), "WEBP", lossless=True)),
    "webp alpha": ("webp", lambda: saved(picture("RGBA"), "WEBP")),
    "webp animated": ("webp", lambda: frames("WEBP")),
    "gif": ("gif", lambda: saved(picture("P"), "GIF")),
    "gif animated": ("gif", lambda: frames("GIF", loop=0)),
    "mp4 h264": ("mp4", lambda: video("mp4", "libx264")),
    "webm vp9": ("webm", lambda: video("webm", "libvpx-vp9")),
    "mp3 44.1 kHz": ("mp3", lambda: audio("mp3", "libmp3lame")),
    "mp3 22.05 kHz mono": ("mp3", lambda: audio("mp3", "libmp3lame", 22050, "mono")),
    "wav": ("wav", lambda: audio("wav", "pcm_s16le")),
    "ogg opus": ("ogg", lambda: audio("ogg", "libopus", 48000)),
    "flac": ("flac", lambda: audio("flac", "flac")),
    "glb": ("glb", glb),
}

AV_KINDS = ("mp4", "webm", "mp3", "wav", "ogg", "flac")


def _rechunked(png: bytes, size: int) -> bytes:
    """The same PNG with its image data split into IDAT chunks of ``size`` bytes."""
    pos, data, kept = 8, b"", []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        else:
            kept.append(png[pos : pos + 12 + length])
        pos += 12 + length
    idats = [
        struct.pack(">I", len(part)) + b"IDAT" + part + struct.pack(">I", zlib.crc32(b"IDAT" + part))
        for part in (data[i : i + size] for i in range(0, len(data), size))
    ]
    return png[:8] + kept[0] + b"".join(idats) + b"".join(kept[1:])


@pytest.fixture(params=sorted(VALID), scope="module")
def sample(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    kind, make = VALID[request.param]
    if kind in AV_KINDS:
        pytest.importorskip("av")
    return kind, make()


def test_every_valid_variant_passes(sample: tuple[str, bytes], tmp_path: Path) -> None:
    kind, data = sample
    assert problem(data, kind) is None
    path = tmp_path / "file"
    path.write_bytes(data)
    assert problem(path, kind) is None


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, -1])
def test_every_cut_copy_is_refused(sample: tuple[str, bytes], keep: float) -> None:
    kind, data = sample
    cut = data[:-1] if keep == -1 else data[: int(len(data) * keep)]
    assert problem(cut, kind) is not None


def test_a_png_bit_flip_anywhere_after_the_signature_is_refused() -> None:
    data = saved(picture(), "PNG")
    for at in range(8, len(data), max(1, len(data) // 97)):
        damaged = data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]
        assert problem(damaged, "png") is not None, at


def test_a_jpeg_marker_inside_a_scan_is_refused() -> None:
    data = saved(picture(), "JPEG")
    scan = data.index(b"\xff\xda") + 40
    assert "no encoder writes" in (problem(data[:scan] + b"\xff\x12" + data[scan + 2 :], "jpeg") or "")


def test_an_ogg_page_with_a_flipped_byte_fails_its_crc() -> None:
    pytest.importorskip("av")
    data = audio("ogg", "libopus", 48000)
    middle = len(data) // 2
    assert "CRC" in (problem(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :], "ogg") or "")


def test_mp4_without_its_index_is_refused() -> None:
    pytest.importorskip("av")
    data = video("mp4", "libx264")
    moov = data.index(b"moov") - 4
    (size,) = struct.unpack(">I", data[moov : moov + 4])
    assert "moov" in (problem(data[:moov] + data[moov + size :], "mp4") or "")


def test_the_emulators_row_by_row_upscale_passes_and_its_damage_does_not() -> None:
    """16384x256 from the writer that makes the 16384x16384 upscale (several IDAT chunks)."""
    flat = saved(picture("RGB", (4096, 64)), "PNG")
    data = upscale_png(flat, 4)
    assert data is not None
    assert problem(data, "png") is None
    assert problem(data[:-20] + b"\x00" * 20, "png") is not None


def test_an_image_over_the_pixel_limit_is_refused_by_its_header() -> None:
    header = struct.pack(">IIBBBBB", 65536, 65536, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    assert "pixels" in (problem(b"\x89PNG\r\n\x1a\n" + ihdr, "png") or "")


@pytest.mark.parametrize("name", ["mp3 44.1 kHz", "wav", "ogg opus", "flac", "glb", "mp4 h264"])
def test_audio_3d_and_video_are_stored_whole_and_a_cut_copy_never(
    name: str, httpserver: HTTPServer, tmp_path: Path
) -> None:
    """Through the real hook's download and the atomic store: a whole file lands with its own
    extension; the same file cut by 10 % is fetched twice, refused, and nothing is written."""
    kind, make = VALID[name]
    if kind in AV_KINDS:
        pytest.importorskip("av")
    data = make()
    hook = SegmindHook("segmind_outputs_test")

    def download(url: str, fileobj: IO[bytes]) -> str:
        return hook.download(url, fileobj, max_bytes=DEFAULT_MAX_BYTES)

    httpserver.expect_request("/whole").respond_with_data(data, content_type=MEDIA_TYPES[kind])
    httpserver.expect_request("/cut").respond_with_data(
        data[: len(data) * 9 // 10], content_type=MEDIA_TYPES[kind]
    )
    stored = Path(store_output(httpserver.url_for("/whole"), str(tmp_path / "whole"), download=download)[0])
    assert stored.name == f"whole{EXTENSIONS[kind]}"
    assert stored.read_bytes() == data
    with pytest.raises(SegmindOutputError, match=rf"broken {kind} file \(2 downloads\)"):
        store_output(httpserver.url_for("/cut"), str(tmp_path / "cut"), download=download)
    assert [p.name for p in tmp_path.iterdir()] == [stored.name]


def test_a_streamed_wav_with_unknown_lengths_passes() -> None:
    """A TTS service streaming WAV writes 0xFFFFFFFF for the lengths it does not know yet."""
    pytest.importorskip("av")
    data = bytearray(VALID["wav"][1]())
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    assert problem(bytes(data), "wav") is None
