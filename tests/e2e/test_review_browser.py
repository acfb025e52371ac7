"""SegmindReviewOperator in a real Airflow UI: a reviewer rejects one poster, the next task gets the rest.

The example DAG ``segmind_review`` (dags/segmind_review.py: three flux-1.1-pro posters as a batch, the
review step, ``publish``) runs on the shared deployment (``conftest.deployment``, the emulator at a
tenth of the models' times). Headless chromium logs in, opens the review step's Required Actions page,
waits until the three uploaded previews have decoded, picks ``harbour`` in the *Reject* multi-select
(typed and chosen with Enter, as a person does), types a reason and clicks *Reject selected*. Then
``publish`` must have received the other two posters, and ``harbour`` with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from airflow_deployment import Deployment
from browser import DevTools, answer_status, chromium, evaluate, open_page, screenshot
from processes import wait_until

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
DAG_ID = "segmind_review"
REVIEW_TASK = "review"
REJECTED = "harbour"
REASON = "the boats look melted"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

#: The previews on the page (the emulator's media address), once all have decoded; the form's parts.
PAGE_JS = """
new Promise(resolve => {
  const started = Date.now();
  const look = () => {
    const previews = [...document.images].filter(img => img.src.includes('/media/assets/'));
    const settled = previews.length >= 3 && previews.every(img => img.complete && img.naturalWidth > 0);
    if ((settled && document.querySelector('#element_reject')) || Date.now() - started > 30000) {
      resolve(JSON.stringify({
        previews: previews.map(img => ({src: img.src, alt: img.alt, naturalWidth: img.naturalWidth})),
        text: document.body.innerText,
        buttons: [...document.querySelectorAll('button')].map(b => b.innerText.trim()).filter(Boolean),
      }));
    } else { setTimeout(look, 250); }
  };
  look();
})
"""
FOCUS_JS = """
(() => {
  const field = document.querySelector('%s');
  if (!field) return 'no field %s';
  const input = field.matches('input, textarea') ? field : field.querySelector('input, textarea');
  if (!input) return 'no input in %s';
  input.scrollIntoView({block: 'center'});
  input.focus();
  return 'focused';
})()
"""
CLICK_JS = """
(() => {
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === '%s');
  if (!button) return 'no such button';
  button.click();
  return 'clicked';
})()
"""
CHOSEN_JS = "document.querySelector('#element_reject').innerText"


async def press_enter(tools: DevTools) -> None:
    for kind in ("keyDown", "keyUp"):
        await tools.call(
            "Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13
        )


async def type_into(tools: DevTools, selector: str, text: str) -> None:
    focused = await evaluate(tools, FOCUS_JS % (selector, selector, selector))
    assert focused == "focused", focused
    await tools.call("Input.insertText", text=text)
    await asyncio.sleep(0.5)  # the select filters its options as the text arrives


async def reject_in_browser(port: int, url: str, shot: Path) -> dict[str, Any]:
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
            page = json.loads(await evaluate(tools, PAGE_JS, timeout=60))
            await type_into(tools, "#element_reject", REJECTED)
            await press_enter(tools)
            page["chosen"] = await evaluate(tools, CHOSEN_JS)
            await type_into(tools, "#element_reason", REASON)
            await screenshot(tools, shot)
            page["click"] = await evaluate(tools, CLICK_JS % "Reject selected")
            page["answer_status"] = await answer_status(tools)  # the browser stays open until then
            return dict(page)
        finally:
            await ws.close()


def task_state(deployment: Deployment, run_id: str, task_id: str) -> str | None:
    rows = deployment.query(
        "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        DAG_ID,
        run_id,
        task_id,
    )
    return rows[0][0] if rows else None


def review_settled(deployment: Deployment, run_id: str) -> bool:
    """The review waits for a person and the scheduler has seen the process that parked it end
    (an answer before that can be lost: ``Deployment.review_settled`` says why)."""
    if task_state(deployment, run_id, REVIEW_TASK) != "awaiting_input":
        return False
    marker = f"task_id={REVIEW_TASK}, run_id={run_id}, map_index=-1"
    log = deployment.logs["scheduler"].read_text(errors="replace").splitlines()
    return any(
        "TaskInstance Finished" in line and marker in line and "awaiting_input" in line for line in log
    )


def describe(deployment: Deployment, run_id: str) -> str:
    states = {t: task_state(deployment, run_id, t) for t in ("posters", REVIEW_TASK, "publish")}
    return f"run {run_id}: {states}\n" + deployment.describe(run_id)


def test_the_reviewer_rejects_one_poster_and_publish_receives_the_other_two(
    chromium_binary: str, deployment: Deployment
) -> None:
    wait_until(
        functools.partial(deployment.query, "SELECT 1 FROM dag WHERE dag_id = ? AND is_paused = 0", DAG_ID),
        120,
        f"the dag-processor to register {DAG_ID}",
        interval=1,
    )
    run_id = "e2e-review"
    first_seq = deployment.last_call_seq()
    deployment.trigger_dag(DAG_ID, run_id, {})
    deadline = time.monotonic() + 300
    while not review_settled(deployment, run_id):
        assert time.monotonic() < deadline, describe(deployment, run_id)
        assert task_state(deployment, run_id, "posters") not in ("failed", "upstream_failed")
        time.sleep(0.5)

    page_path = f"/dags/{DAG_ID}/runs/{run_id}/tasks/{REVIEW_TASK}/required_actions"
    url = f"{deployment.api_url}/auth/token/login?next={quote(deployment.api_url + page_path, safe='')}"
    shot = ARTIFACTS / "review.png"
    shot.unlink(missing_ok=True)
    with chromium(chromium_binary) as port:
        page = asyncio.run(reject_in_browser(port, url, shot))

    # The three posters are on the page as the previews the step uploaded to Segmind storage.
    uploaded = {
        f["url"]
        for call in deployment.emulator("GET", f"/calls?endpoint=upload&since={first_seq}")
        for f in call["files"]
    }
    assert len(page["previews"]) == 3 and {p["src"] for p in page["previews"]} <= uploaded, page["text"][
        :2000
    ]
    assert all(p["naturalWidth"] > 100 for p in page["previews"]), page["previews"]
    assert {"Approve all", "Reject selected"} <= set(page["buttons"]), page["buttons"]
    assert REJECTED in page["chosen"], page["chosen"]
    assert page["click"] == "clicked" and page["answer_status"] == 200

    # The answer reaches Airflow; publish receives the two others, and the rejected one with its reason.
    deadline = time.monotonic() + 120
    while task_state(deployment, run_id, "publish") != "success":
        assert time.monotonic() < deadline, describe(deployment, run_id)
        assert task_state(deployment, run_id, "publish") not in ("failed", "upstream_failed", "skipped")
        time.sleep(0.5)
    entry = deployment.rest(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
    )
    value = entry["value"]
    received = json.loads(value) if isinstance(value, str) else value
    assert sorted(received["approved"]) == ["dunes", "lighthouse"], received
    assert all(len(uris) == 1 and uris[0].endswith(".png") for uris in received["approved"].values())
    assert received["rejected"] == {REJECTED: REASON}
    assert received["reviewed_by"]
