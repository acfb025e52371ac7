"""The published gallery in a real browser: Debian's headless chromium, over the DevTools protocol.

The page is the one the shared deployment's approved nightly run published (``conftest.published_run``:
product photos through background removal, scene, caption, the hero's upscale and clip, one product
content-blocked), copied and opened from disk (``file://``, as a person would open it), and
checked from inside the page: it loads, every ``<img>`` decoded (``naturalWidth > 0``), the clip's
video loads, no request failed. A full-page screenshot is saved to ``artifacts/gallery.png``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from airflow_deployment import BLOCKED_PRODUCT, Deployment, NightlyRun
from browser import DevTools, chromium, evaluate, open_page, screenshot
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PAGE_JS = """
Promise.all([
  ...[...document.images].map(img => img.decode().then(() => null, () => null)),
  ...[...document.querySelectorAll('video')].map(v => new Promise(done => {
    if (v.readyState >= 1) return done(null);
    v.onloadedmetadata = () => done(null); v.onerror = () => done(null); setTimeout(done, 10000);
  })),
]).then(() => JSON.stringify({
    readyState: document.readyState,
    title: document.title,
    cards: document.querySelectorAll('article').length,
    failedCards: document.querySelectorAll('article.failed').length,
    images: [...document.images].map(img => ({
      src: img.getAttribute('src'), complete: img.complete, naturalWidth: img.naturalWidth })),
    videos: [...document.querySelectorAll('video')].map(v => ({
      src: v.getAttribute('src'), readyState: v.readyState, videoWidth: v.videoWidth, duration: v.duration })),
}))
"""


async def inspect_page(port: int, url: str, shot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        ws = await open_page(session, port)
        try:
            tools = DevTools(ws)
            await tools.call("Page.enable")
            await tools.call("Network.enable")
            navigation = await tools.call("Page.navigate", url=url)
            assert "errorText" not in navigation, navigation
            await tools.wait_for("Page.loadEventFired")
            result: dict[str, Any] = json.loads(await evaluate(tools, PAGE_JS))
            await screenshot(tools, shot)
            # A video's request is cut short once its metadata is in (preload="metadata"): not a failure.
            result["failedRequests"] = [
                e["params"]
                for e in tools.events
                if e["method"] == "Network.loadingFailed"
                and not (
                    e["params"].get("type") == "Media" and e["params"].get("errorText") == "net::ERR_ABORTED"
                )
            ]
            return result
        finally:
            await ws.close()


@pytest.fixture
def gallery(deployment: Deployment, published_run: NightlyRun, tmp_path: Path) -> Path:
    """A copy of the published folder (tests may break it)."""
    folder = deployment.output / "published" / published_run.day
    copy = tmp_path / published_run.day
    shutil.copytree(folder, copy)
    return copy / "index.html"


def test_gallery_loads_and_every_stage_shows(chromium_binary: str, gallery: Path) -> None:
    shot = ARTIFACTS / "gallery.png"
    shot.unlink(missing_ok=True)
    manifest = json.loads((gallery.parent / "manifest.json").read_text())
    with chromium(chromium_binary) as port:
        page = asyncio.run(inspect_page(port, gallery.as_uri(), shot))

    assert page["readyState"] == "complete"
    assert page["title"].startswith("Northwind Outfitters")
    assert page["cards"] == len(manifest["products"]) == 3 and page["failedCards"] == 1
    # Every stage preview (photo, cut-out, scene, hero upscale) and every product's formats thumbnail.
    expected = sorted(
        [src for p in manifest["products"] for src in p["previews"].values()]
        + [p["files"]["thumbnail"] for p in manifest["products"] if "thumbnail" in p["files"]]
    )
    assert sorted(img["src"] for img in page["images"]) == expected
    # 2 published x (photo, cutout, scene, formats), the hero's upscale, the blocked one's photo and cutout
    assert len(expected) == 2 * 4 + 1 + 2
    broken = [img for img in page["images"] if not img["complete"] or img["naturalWidth"] <= 0]
    assert broken == [], broken
    assert not any(img["src"].startswith(f"{BLOCKED_PRODUCT}/preview-scene") for img in page["images"])
    # The hero's clip plays in the page: the browser read its metadata (a real MP4).
    (video,) = page["videos"]
    assert video["readyState"] >= 1 and video["videoWidth"] > 0 and video["duration"] > 0
    assert page["failedRequests"] == []
    with Image.open(shot) as image:
        assert image.width >= 1000 and image.height > 900


def test_a_broken_image_is_detected(chromium_binary: str, gallery: Path, tmp_path: Path) -> None:
    """The check can fail: delete one preview and the page reports it as not decoded."""
    missing = sorted(gallery.parent.glob("*/preview-scene.jpg"))[0]
    missing.unlink()
    with chromium(chromium_binary) as port:
        page = asyncio.run(inspect_page(port, gallery.as_uri(), tmp_path / "broken.png"))
    broken = [img["src"] for img in page["images"] if img["naturalWidth"] == 0]
    assert broken == [f"{missing.parent.name}/preview-scene.jpg"]
