"""Issue 20, defect 2 (done when): the connection form, seen in a real browser, shows every extra.

An Airflow api-server alone (a temporary AIRFLOW_HOME, SQLite; nothing else is needed for the
form) and headless chromium: Admin > Connections > Add Connection, type "Segmind", open "Extra
Fields"; every extra docs/hook.md lists is there with its label and description
(tests/unit/test_connection_form.py ties the fields to the extras the hook reads). About a minute.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser import DevTools, chromium, evaluate, open_page, screenshot

import segmind_provider

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

CLICK_BUTTON_JS = """(() => {
  const button = [...document.querySelectorAll(%(scope)r + ' button')]
    .find(b => b.innerText.trim() === %(text)r);
  if (!button) return null;
  button.scrollIntoView();
  const box = button.getBoundingClientRect();
  return {x: box.x + box.width / 2, y: box.y + box.height / 2};
})()"""
FOCUS_TYPE_JS = """(() => {
  const label = [...document.querySelectorAll('[role=dialog] label')]
    .find(l => l.innerText.includes('Connection Type'));
  document.getElementById(label.htmlFor).focus();
  return true;
})()"""
DIALOG_TEXT_JS = "(document.querySelector('[role=dialog]') || {innerText: ''}).innerText"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An api-server on a free loopback port, every user an admin (no login page)."""
    home = tmp_path_factory.mktemp("form_home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SEGMIND_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        }
    )
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, timeout=300, check=True)
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not healthy(port):
            assert server.poll() is None and time.monotonic() < deadline, (
                home / "api-server.log"
            ).read_text()
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


async def click(tools: DevTools, text: str, scope: str = "") -> None:
    """A real mouse click on the button showing ``text`` (the accordion ignores a scripted .click())."""
    box = None
    for _ in range(120):
        box = await evaluate(tools, CLICK_BUTTON_JS % {"scope": scope or "body", "text": text})
        if box:
            break
        await asyncio.sleep(0.5)
    assert box, f"no {text!r} button"
    for kind in ("mousePressed", "mouseReleased"):
        await tools.call(
            "Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1
        )


async def press_enter(tools: DevTools) -> None:
    for kind in ("keyDown", "keyUp"):
        await tools.call(
            "Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13
        )


async def dialog_text_with(tools: DevTools, wanted: str) -> str:
    text = ""
    for _ in range(60):
        text = str(await evaluate(tools, DIALOG_TEXT_JS))
        if wanted in text:
            return text
        await asyncio.sleep(0.5)
    return text


async def segmind_form(chromium_binary: str, base_url: str) -> str:
    """The text of the Add Connection dialog for type Segmind, with its Extra Fields open."""
    with chromium(chromium_binary) as port:
        async with aiohttp.ClientSession() as session:
            tools = DevTools(await open_page(session, port))
            await tools.call("Page.enable")
            await tools.call("Page.navigate", url=f"{base_url}/connections")
            await tools.wait_for("Page.loadEventFired")
            await click(tools, "Add Connection")
            await dialog_text_with(tools, "Connection Type")
            await evaluate(tools, FOCUS_TYPE_JS)
            await tools.call("Input.insertText", text="Segmind")
            await asyncio.sleep(0.5)
            await press_enter(tools)
            assert "API Key" in await dialog_text_with(tools, "API Key")  # the type took
            await click(tools, "Extra Fields", scope="[role=dialog]")
            text = await dialog_text_with(tools, "Time scale")
            await screenshot(tools, ARTIFACTS / "connection-form.png")
            return text


def documented_extras() -> list[str]:
    """The extras docs/hook.md's connection table lists (``| extra `name` |``)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "hook.md").read_text()
    return re.findall(r"^\| extra `(\w+)` \|", text, re.M)


def test_the_connection_form_shows_every_extra_the_docs_list(chromium_binary: str, api_server: str) -> None:
    extras = documented_extras()
    assert len(extras) >= 8
    (conn,) = segmind_provider.get_provider_info()["connection-types"]
    fields: dict[str, Any] = conn["conn-fields"]
    assert sorted(fields) == sorted(extras)
    text = asyncio.run(segmind_form(chromium_binary, api_server))
    for name in extras:
        assert fields[name]["label"] in text, (name, text)
        assert fields[name]["description"] in text, (name, text)
