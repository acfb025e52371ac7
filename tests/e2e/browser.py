"""Headless chromium over the DevTools protocol, for the browser tests (gallery, approval page).

Debian's chromium (``scripts/ensure-debian-packages`` installs it), driven through a few lines over
aiohttp's websocket (already a dependency), so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

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


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands with ids, and events collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
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
        return await self.wait_until(lambda message: message["method"] == event, timeout)

    async def wait_until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first event, already seen or still to come, that ``match`` accepts."""
        for seen in self.events:
            if match(seen):
                return seen
        deadline = time.monotonic() + timeout
        while True:
            message = await self._receive(deadline)
            if "method" in message:
                self.events.append(message)
                if match(message):
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


async def open_page(session: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse[bool]:
    """The websocket of the browser's first page."""
    async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
        targets = await response.json(content_type=None)
    page = next(t for t in targets if t.get("type") == "page")
    return await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)


async def evaluate(tools: DevTools, expression: str, timeout: float = 30.0) -> Any:
    """Run JavaScript in the page (promises awaited) and return its JSON-able value."""
    evaluated = await tools.call(
        "Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True, returnByValue=True
    )
    if "exceptionDetails" in evaluated:
        raise RuntimeError(f"page script failed: {evaluated['exceptionDetails']}")
    return evaluated["result"].get("value")


async def answer_status(tools: DevTools) -> int | None:
    """After a click that answers a human-in-the-loop step (``Network.enable`` first): wait until the
    page has sent the answer and the server replied, and return the reply's status (None: it failed).

    Closed at once, a loaded machine's browser could drop the request in flight, and the step never
    resumed.
    """
    sent = await tools.wait_until(
        lambda e: (
            e["method"] == "Network.requestWillBeSent"
            and e["params"]["request"]["method"] != "GET"
            and "hitl" in e["params"]["request"]["url"].lower()
        ),
        timeout=60,
    )
    request_id = sent["params"]["requestId"]
    reply = await tools.wait_until(
        lambda e: (
            e["method"] in ("Network.responseReceived", "Network.loadingFailed")
            and e["params"]["requestId"] == request_id
        ),
        timeout=120,
    )
    status = reply["params"].get("response", {}).get("status")
    return int(status) if status is not None else None


async def screenshot(tools: DevTools, path: Path) -> None:
    """A full-page PNG of what the browser shows."""
    metrics = await tools.call("Page.getLayoutMetrics")
    size = metrics["cssContentSize"]
    shot = await tools.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` tries it)")
    return binary
