"""The gallery page in a real browser: Debian's headless chromium, driven over the DevTools protocol.

The page is built by the pipeline's own functions (catalog → formats → manifest → gallery) from
images the emulator generated through the provider's hook, with one content-blocked product, opened
from disk (``file://``, as a person would open it), and checked from inside
the page: it loads, every ``<img>`` decoded (``naturalWidth > 0``), no request failed. A full-page
screenshot is saved to ``artifacts/gallery.png``. The DevTools client is a few lines over aiohttp's
websocket (already a dependency), so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))

from segmind_pipeline import catalog, publishing  # noqa: E402

from segmind_provider.exceptions import SegmindError  # noqa: E402

ARTIFACTS = REPO / "artifacts"
BLOCKED_WORD = "headlamp"  # the catalog's aurora-headlamp product
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.segmind_emulator(blocked_words=[BLOCKED_WORD]),
    pytest.mark.usefixtures("segmind_emulator_connection"),
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def finished(hook: Any, request_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The result of a request once it is done (FAILED raises), polling its status every 50 ms."""
    deadline = time.monotonic() + timeout
    while hook.get_status(request_id)["status"] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, f"{request_id} not done after {timeout} s"
        time.sleep(0.05)
    return dict(hook.get_result(request_id))


def build_gallery(root: Path) -> Path:
    """A run's published folder, made by the same functions the DAG's render and publish tasks call,
    from images the emulator generated through the provider's hook (one product is content-blocked)."""
    from segmind_provider.hooks.segmind import SegmindHook

    hook = SegmindHook()
    campaign = catalog.load_catalog()
    day = dt.date(2026, 11, 24)
    jobs = catalog.build_jobs(campaign, day, str(root / "raw"))
    folder = root / "published" / day.isoformat()
    submitted = [hook.submit(job["model"], job["payload"])["request_id"] for job in jobs]
    records = []
    for job, request_id in zip(jobs, submitted, strict=True):
        try:
            result = finished(hook, request_id)
        except SegmindError as exc:
            records.append(
                publishing.product_record(job, status="failed", request_id=request_id, error=str(exc))
            )
            continue
        original = io.BytesIO()
        hook.download(result["output"], original, max_bytes=64 * 1024 * 1024)
        records.append(
            publishing.publish_product(
                folder,
                job,
                original.getvalue(),
                suffix=".png",
                request_id=request_id,
                inference_time=result["metrics"]["inference_time"],
            )
        )
    manifest = publishing.build_manifest(
        records,
        dag_id="segmind_content_pipeline",
        run_id="manual__browser-test",
        run_date=day,
        campaign=campaign.campaign,
        brand=campaign.brand,
        publish_uri=str(folder),
    )
    _, gallery = publishing.write_manifest_and_gallery(folder, manifest)
    return gallery


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands with ids, and events collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    async def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message_id = self._next_id
        await self.ws.send_json({"id": message_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = await self._receive(deadline)
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    async def _receive(self, deadline: float) -> dict[str, Any]:
        """Next message, or TimeoutError at the deadline (asyncio.timeout needs Python 3.11)."""
        message = await asyncio.wait_for(self.ws.receive_json(), max(0.01, deadline - time.monotonic()))
        return dict(message)

    async def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        for seen in self.events:
            if seen["method"] == event:
                return seen
        deadline = time.monotonic() + timeout
        while True:
            message = await self._receive(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return message


@contextlib.contextmanager
def chromium(binary: str) -> Iterator[int]:
    """Start headless chromium with a fresh profile; yields its DevTools port; kills its whole group.

    Its profile and its own temporary files (``TMPDIR``) live in one folder removed afterwards, so a
    killed browser leaves nothing behind in /tmp.
    """
    base = Path(tempfile.mkdtemp(prefix="chromium-e2e-"))
    profile, scratch = base / "profile", base / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
                )
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)


IMAGES_JS = """
Promise.all([...document.images].map(img => img.decode().then(() => null, () => null)))
  .then(() => JSON.stringify({
    readyState: document.readyState,
    title: document.title,
    cards: document.querySelectorAll('article').length,
    failedCards: document.querySelectorAll('article.failed').length,
    images: [...document.images].map(img => ({
      src: img.getAttribute('src'), complete: img.complete,
      naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight })),
  }))
"""


async def inspect_page(port: int, url: str, screenshot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools.call("Page.enable")
            await tools.call("Network.enable")
            navigation = await tools.call("Page.navigate", url=url)
            assert "errorText" not in navigation, navigation
            await tools.wait_for("Page.loadEventFired")
            evaluated = await tools.call(
                "Runtime.evaluate", expression=IMAGES_JS, awaitPromise=True, returnByValue=True
            )
            result = json.loads(evaluated["result"]["value"])
            metrics = await tools.call("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            shot = await tools.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result["failedRequests"] = [
                e["params"] for e in tools.events if e["method"] == "Network.loadingFailed"
            ]
            return result


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` tries it)")
    return binary


def test_gallery_loads_and_every_image_decodes(chromium_binary: str, tmp_path: Path) -> None:
    gallery = build_gallery(tmp_path)
    screenshot = ARTIFACTS / "gallery.png"
    screenshot.unlink(missing_ok=True)
    with chromium(chromium_binary) as port:
        page = asyncio.run(inspect_page(port, gallery.as_uri(), screenshot))

    assert page["readyState"] == "complete"
    assert page["title"].startswith("Northwind Outfitters")
    assert page["cards"] == 12 and page["failedCards"] == 1
    assert len(page["images"]) == 11  # the failed product shows a placeholder, not a broken <img>
    broken = [img for img in page["images"] if not img["complete"] or img["naturalWidth"] <= 0]
    assert broken == [], broken
    assert all(img["naturalWidth"] == 360 for img in page["images"])  # the thumbnails
    assert page["failedRequests"] == []
    with Image.open(screenshot) as shot:
        assert shot.width >= 1000 and shot.height > 900


def test_a_broken_image_is_detected(chromium_binary: str, tmp_path: Path) -> None:
    """The check can fail: delete one thumbnail and the page reports it as not decoded."""
    gallery = build_gallery(tmp_path)
    missing = sorted(gallery.parent.glob("*/thumbnail.jpg"))[0]
    missing.unlink()
    with chromium(chromium_binary) as port:
        page = asyncio.run(inspect_page(port, gallery.as_uri(), tmp_path / "broken.png"))
    broken = [img["src"] for img in page["images"] if img["naturalWidth"] == 0]
    assert broken == [f"{missing.parent.name}/thumbnail.jpg"]
