"""The approval step in a real Airflow UI: a reviewer's browser sees the candidate images and approves.

The nightly run of the shared deployment (``conftest.nightly_run``) is parked at its human-in-the-loop
step. Headless chromium logs in (the simple auth manager's all-admins login), opens the step's
Required Actions page, waits until every product's stage strip (uploaded to the emulator's storage,
served from its media address) has decoded, keeps a screenshot in ``artifacts/approval.png``, and
clicks Approve: the answer reaches Airflow (the step succeeds, answered by the UI's user).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from airflow_deployment import BLOCKED_PRODUCT, DAG_ID, REVIEW_TASK, Deployment, NightlyRun, catalog
from browser import DevTools, answer_status, chromium, evaluate, open_page, screenshot
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: The candidate images of the page (the strips on the emulator's media address), once all are settled.
CANDIDATES_JS = """
new Promise(resolve => {
  const started = Date.now();
  const look = () => {
    const strips = [...document.images].filter(img => img.src.includes('/media/assets/'));
    const settled = strips.length >= %(expected)d && strips.every(img => img.complete);
    if (settled || Date.now() - started > 30000) {
      resolve(JSON.stringify({
        strips: strips.map(img => ({src: img.src, alt: img.alt, naturalWidth: img.naturalWidth})),
        text: document.body.innerText,
        buttons: [...document.querySelectorAll('button')].map(b => b.innerText.trim()).filter(Boolean),
      }));
    } else { setTimeout(look, 250); }
  };
  look();
})
"""
CLICK_JS = """
(() => {
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === '%s');
  if (!button) return 'no such button';
  button.click();
  return 'clicked';
})()
"""


async def review_in_browser(port: int, url: str, expected: int, shot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        ws = await open_page(session, port)
        try:
            tools = DevTools(ws)
            await tools.call("Page.enable")
            await tools.call("Network.enable")
            await tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=2400,
                deviceScaleFactor=1,
                mobile=False,
            )
            navigation = await tools.call("Page.navigate", url=url)
            assert "errorText" not in navigation, navigation
            await tools.wait_for("Page.loadEventFired")
            page = json.loads(await evaluate(tools, CANDIDATES_JS % {"expected": expected}, timeout=60))
            await screenshot(tools, shot)
            page["click"] = await evaluate(tools, CLICK_JS % "Approve")
            page["answer_status"] = await answer_status(tools)  # the browser stays open until then
            return dict(page)
        finally:
            await ws.close()


def test_the_approval_page_shows_the_candidates_and_takes_the_answer(
    chromium_binary: str, deployment: Deployment, nightly_run: NightlyRun
) -> None:
    run_id = nightly_run.run_id
    assert deployment.awaiting_review(run_id), deployment.describe(run_id)
    names = {str(p["id"]): str(p["name"]) for p in catalog()["products"]}
    page_path = f"/dags/{DAG_ID}/runs/{run_id}/tasks/{REVIEW_TASK}/required_actions"
    url = f"{deployment.api_url}/auth/token/login?next={quote(deployment.api_url + page_path, safe='')}"
    shot = ARTIFACTS / "approval.png"
    shot.unlink(missing_ok=True)
    with chromium(chromium_binary) as port:
        page = asyncio.run(review_in_browser(port, url, len(nightly_run.products), shot))

    # Every product's candidate strip is on the page and decoded in the reviewer's browser ...
    strips = page["strips"]
    assert len(strips) == len(nightly_run.products), page["text"][:2000]
    assert all(strip["naturalWidth"] > 600 for strip in strips), strips
    assert sorted(s["alt"].split(":")[0] for s in strips) == sorted(names[p] for p in nightly_run.products)
    # ... they are the strips the pipeline uploaded to Segmind storage (the emulator's), no other images ...
    uploaded = {
        f["url"]
        for call in deployment.emulator("GET", f"/calls?endpoint=upload&since={nightly_run.first_seq}")
        for f in call["files"]
        if f["content_type"] == "image/jpeg"
    }
    assert {s["src"] for s in strips} <= uploaded
    # ... with the blocked product marked, and the two answers offered.
    assert f"{names[BLOCKED_PRODUCT]}: not ready" in page["text"] and "Content moderation" in page["text"]
    assert {"Approve", "Reject"} <= set(page["buttons"])
    with Image.open(shot) as image:
        assert image.width == 1280 and image.height >= 1200

    # The click is the answer: Airflow records it and the step succeeds.
    assert page["click"] == "clicked" and page["answer_status"] == 200
    deadline = time.monotonic() + 180  # the step resumes once the triggerer sees the answer
    while deployment.task_states(run_id, REVIEW_TASK).get(-1) != "success":
        assert time.monotonic() < deadline, deployment.describe(run_id)
        time.sleep(0.5)
    detail = deployment.rest("GET", deployment.review_path(run_id))
    assert detail["chosen_options"] == ["Approve"] and detail["response_received"]
