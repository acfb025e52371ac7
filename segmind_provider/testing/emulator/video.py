"""A short, real H.264 MP4 made from an image: a slow zoom with the prompt drawn on each frame.

PyAV (`av` on PyPI, FFmpeg's libraries in a wheel) is needed only for video outputs; it ships
in the `emulator` extra (`pip install 'airflow-provider-segmind[emulator]'`), which the `test`
extra includes. Without it a video model's request is refused (400, this hint) before it is
charged, and the command line says so when it starts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from .render import draw_band

FPS = 8
MAX_SECONDS = 10.0
MAX_SIDE = 512
INSTALL_HINT = (
    "video outputs need PyAV: pip install 'airflow-provider-segmind[emulator]' (or: pip install av)"
)


class VideoUnavailableError(RuntimeError):
    """PyAV is not installed: the emulator cannot encode MP4 outputs."""


def video_problem() -> str | None:
    """Why this emulator cannot make videos (PyAV missing), or None when it can."""
    try:
        import av  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


def frame_size(size: tuple[int, int]) -> tuple[int, int]:
    """At most MAX_SIDE on the long side, both sides even (H.264 with 4:2:0 chroma needs it)."""
    scale = min(1.0, MAX_SIDE / max(size))
    return tuple(max(2, int(side * scale) // 2 * 2) for side in size)  # type: ignore[return-value]


def image_to_video(still: Image.Image, prompt: str, footer: str, seconds: float) -> bytes:
    """`seconds` (1-10) of video at FPS frames a second, zooming from the whole image to 85 % of it."""
    try:
        import av
    except ImportError as exc:
        raise VideoUnavailableError(INSTALL_HINT) from exc
    seconds = max(1.0, min(MAX_SECONDS, seconds))
    size = frame_size(still.size)
    base = ImageOps.fit(still.convert("RGB"), size, Image.Resampling.LANCZOS)
    frames = max(2, round(seconds * FPS))
    # faststart (the index before the frames, so a browser plays it while it loads) rewrites the
    # file in a second pass, which needs a real file rather than a buffer.
    with tempfile.TemporaryDirectory(prefix="segmind-emulator-") as tmp:
        path = Path(tmp) / "clip.mp4"
        _encode(av, path, base, prompt, footer, frames)
        return path.read_bytes()


def _encode(av: Any, path: Path, base: Image.Image, prompt: str, footer: str, frames: int) -> None:
    size = base.size
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(frames):
            zoom = 1.0 - 0.15 * i / (frames - 1)
            crop_w, crop_h = int(size[0] * zoom), int(size[1] * zoom)
            left, top = (size[0] - crop_w) // 2, (size[1] - crop_h) // 2
            frame = base.crop((left, top, left + crop_w, top + crop_h)).resize(
                size, Image.Resampling.BILINEAR
            )
            draw_band(frame, prompt, f"{footer} · frame {i + 1}/{frames}", max_lines=2)
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
