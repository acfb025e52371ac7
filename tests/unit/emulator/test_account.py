"""The account API: a key's own request history (in flight, finished, failed) and the credit balance."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
from typing import Any

import httpx
import pytest
from emulator_helpers import KEY, catalog_entries
from segmind import SegmindClient

from segmind_provider.testing.emulator import SegmindEmulator

H = {"x-api-key": KEY}
PATH = "/inference-request/request-history"
FLUX_PRICE = catalog_entries()["flux-1.1-pro"]["price_usd"]


def history(http: httpx.Client, emu: SegmindEmulator, key: str = KEY, **query: Any) -> httpx.Response:
    return http.get(emu.account_url + PATH, params=query, headers={"x-api-key": key})


def submit(http: httpx.Client, emu: SegmindEmulator, **body: Any) -> dict[str, Any]:
    response = http.post(f"{emu.base_url}/v2/flux-1.1-pro", json=body, headers=H)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_rows_follow_a_request_from_pending_to_completed(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    body = {"prompt": "fox", "seed": 7, "output_format": "png", "prompt_upsampling": False, "note": None}
    job = submit(http, segmind_emulator, **body)
    pending = history(http, segmind_emulator).json()
    (row,) = pending["data"]
    assert row["request_id"] == job["request_id"]
    assert (row["model_name"], row["model_status"], row["generation_url"], row["latency_ms"]) == (
        "flux-1.1-pro",
        "PENDING",
        None,
        None,
    )
    assert ast.literal_eval(row["request_body"]) == body  # a Python literal of the inputs as sent
    assert row["credits_deduction"] == FLUX_PRICE
    segmind_emulator.advance(1)
    result = http.get(job["response_url"], headers=H).json()
    done = http.get(f"{segmind_emulator.account_url}{PATH}/{job['request_id']}", headers=H).json()
    assert set(done) == {
        "request_id",
        "model_name",
        "model_status",
        "credits_deduction",
        "request_body",
        "generation_url",
        "latency_ms",
        "created_at",
        "updated_at",
        "error",
    }
    assert (done["model_status"], done["generation_url"], done["error"]) == (
        "COMPLETED",
        result["output"],
        None,
    )
    assert done["latency_ms"] == round(result["metrics"]["inference_time"] * 1000)
    created = dt.datetime.fromisoformat(done["created_at"].replace("Z", "+00:00"))
    updated = dt.datetime.fromisoformat(done["updated_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert created <= updated


def test_a_blocked_request_is_failed_with_its_reason_and_not_charged(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    segmind_emulator.configure(blocked_words=["gore"], credits=1)
    submit(http, segmind_emulator, prompt="gore")
    segmind_emulator.advance(2)
    (row,) = history(http, segmind_emulator, status="FAILED").json()["data"]
    assert (row["model_status"], row["credits_deduction"]) == ("FAILED", 0.0)
    assert "Content moderation" in row["error"]
    assert history(http, segmind_emulator, status="COMPLETED").json()["data"] == []
    assert http.get(f"{segmind_emulator.base_url}/v1/get-user-credits", headers=H).json()["credits"] == 1.0


def test_credits_reflect_each_deduction_in_the_history(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    segmind_emulator.configure(credits=1.0)
    for i in range(3):
        submit(http, segmind_emulator, prompt=f"p{i}")
    rows = history(http, segmind_emulator).json()["data"]
    spent = sum(r["credits_deduction"] for r in {r["request_id"]: r for r in rows}.values())
    balance = http.get(f"{segmind_emulator.base_url}/v1/get-user-credits", headers=H).json()["credits"]
    assert spent == pytest.approx(3 * FLUX_PRICE)
    assert balance == pytest.approx(1.0 - spent)


def test_pages_sorting_and_filters(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    ids = [submit(http, segmind_emulator, prompt=f"p{i}")["request_id"] for i in range(5)]
    segmind_emulator.register_model("tiny-text", latency=1.0, output="text", cost=0.001)
    other = http.post(f"{segmind_emulator.base_url}/v2/tiny-text", json={"prompt": "t"}, headers=H).json()
    pages = [history(http, segmind_emulator, per_page=2, page=p).json() for p in (1, 2, 3, 4)]
    assert [(p["page"], p["per_page"], p["total"], p["total_pages"]) for p in pages] == [
        (n, 2, 6, 3) for n in (1, 2, 3, 4)
    ]
    newest_first = [r["request_id"] for p in pages for r in p["data"]]
    assert newest_first == [other["request_id"], *reversed(ids)]
    assert pages[3]["data"] == []
    oldest_first = history(http, segmind_emulator, sort_order="asc").json()["data"]
    assert [r["request_id"] for r in oldest_first] == [*ids, other["request_id"]]
    by_name = history(http, segmind_emulator, model_name="TINY").json()["data"]
    assert [r["request_id"] for r in by_name] == [other["request_id"]]
    cheapest = history(http, segmind_emulator, sort_by="credits_deduction", sort_order="asc").json()["data"][
        0
    ]
    assert cheapest["request_id"] == other["request_id"]


def test_date_window(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    submit(http, segmind_emulator, prompt="today")
    today = dt.datetime.now(dt.timezone.utc).date()
    assert len(history(http, segmind_emulator, from_date=str(today), to_date=str(today)).json()["data"]) == 1
    yesterday = today - dt.timedelta(days=1)
    assert (
        history(
            http, segmind_emulator, from_date=str(yesterday - dt.timedelta(days=3)), to_date=str(yesterday)
        ).json()["data"]
        == []
    )
    segmind_emulator.advance(8 * 86400)  # outside the default window of the last 7 days
    assert history(http, segmind_emulator).json()["data"] == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"status": "DONE"}, "status"),
        ({"sort_by": "latency"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
        ({"from_date": "01/02/2026"}, "from_date"),
        ({"from_date": "2026-01-01", "to_date": "2026-03-01"}, "from_date"),
        ({"from_date": "2026-03-02", "to_date": "2026-03-01"}, "from_date"),
    ],
)
def test_bad_queries_are_400_naming_the_parameter(
    http: httpx.Client, segmind_emulator: SegmindEmulator, query: dict[str, Any], name: str
) -> None:
    response = history(http, segmind_emulator, **query)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{name}:")


def test_each_key_sees_only_its_own_requests(http: httpx.Client, segmind_emulator: SegmindEmulator) -> None:
    job = submit(http, segmind_emulator, prompt="mine")
    assert history(http, segmind_emulator, key="someone-else").json()["data"] == []
    item = f"{segmind_emulator.account_url}{PATH}/{job['request_id']}"
    assert http.get(item, headers={"x-api-key": "someone-else"}).status_code == 404
    assert http.get(item).status_code == 401
    assert history(http, segmind_emulator, key="").status_code == 401


def test_history_outlives_result_retention_and_counts_in_the_rate_limit(
    http: httpx.Client, segmind_emulator: SegmindEmulator
) -> None:
    job = submit(http, segmind_emulator, prompt="old")
    segmind_emulator.advance(3700)
    assert http.get(job["status_url"], headers=H).status_code == 404
    item = http.get(f"{segmind_emulator.account_url}{PATH}/{job['request_id']}", headers=H)
    assert item.json()["model_status"] == "COMPLETED"
    segmind_emulator.configure(rate_limit=1)
    assert history(http, segmind_emulator).status_code == 200
    assert history(http, segmind_emulator).status_code == 429


def test_official_sdk_generations_history_and_get(
    segmind_emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`generations.history` / `generations.get` (SDK 1.3.0) with the account URL pointed at the emulator."""
    module = importlib.import_module("segmind.generations")  # `segmind.generations` is also an object
    monkeypatch.setattr(module, "REQUEST_HISTORY_URL", segmind_emulator.account_url + PATH)
    client = SegmindClient(api_key=KEY, base_url=segmind_emulator.base_url + "/v1")
    job = client.submit_async("flux-1.1-pro", prompt="fox", seed=1)
    listed = client.generations.history(per_page=100, status="PENDING", model_name="flux")
    assert [row["request_id"] for row in listed["data"]] == [job.request_id]
    job.wait(timeout=30, interval=0.02)
    row = client.generations.get(job.request_id)
    assert (row["model_status"], ast.literal_eval(row["request_body"])) == (
        "COMPLETED",
        {"prompt": "fox", "seed": 1},
    )
    assert [c["endpoint"] for c in segmind_emulator.calls() if c["endpoint"].startswith("history")] == [
        "history",
        "history_item",
    ]
