"""End to end: a campaign as one SegmindBatchOperator task under `airflow dags test`.

The emulator runs in this test process (time-scaled; the session fixtures test_dags_test.py uses
too); `airflow dags test` runs each deferral's trigger in process and resumes the task with its
event, so every wave of the batch goes through Airflow's real deferral path. A worker killed mid-batch
is a SIGKILL to that process, and its retry is `airflow tasks test` on the same run (the run keeps its
task_state_store).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from dags_runner import AIRFLOW, dags_test, run_dags_test
from PIL import Image

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = pytest.mark.e2e

PRICE = 0.05  # flux-1.1-pro, in the catalog and in the emulator
#: 100 items, 40 in flight: three waves (40, 40, 20), each its own deferral, as 500 with 250 were two;
#: the killed-worker test sends 50 in flight so its kill lands in the second wave's submits.
ITEMS = 100
CAMPAIGN = {"SEGMIND_E2E_BATCH_ITEMS": str(ITEMS), "SEGMIND_E2E_BATCH_IN_FLIGHT": "40"}


def manifest(env: dict[str, str], dag_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (Path(env["SEGMIND_E2E_OUTPUT"]) / dag_id / "manifest.json").read_text()
    )
    return data


def counts(dags_emulator: SegmindEmulator) -> dict[str, int]:
    calls = dags_emulator.calls()
    return {name: sum(1 for c in calls if c["endpoint"] == name) for name in ("submit", "media", "history")}


def test_a_campaign_is_one_task_that_stores_each_image_once(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.reset()
    output = dags_test("segmind_e2e_batch", {**airflow_env, **CAMPAIGN})
    seen = counts(dags_emulator)
    assert seen["submit"] == ITEMS and len(dags_emulator.requests()) == ITEMS
    assert seen["media"] == ITEMS  # each image downloaded and stored once
    done = manifest(airflow_env, "segmind_e2e_batch")
    assert done["completed"] == ITEMS and done["failed"] == 0 and done["cost"] == pytest.approx(ITEMS * PRICE)
    assert output.count("[DAG TEST] running trigger in line") == done["waves"] >= 3  # one trigger per wave
    folder = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "segmind_e2e_batch"
    assert len(list(folder.glob("sku-*.jpg"))) == ITEMS
    with Image.open(folder / f"sku-{ITEMS - 1:04d}.jpg") as image:
        assert image.format == "JPEG" and image.size == (256, 256)


@pytest.mark.slow  # `make test-e2e`: the campaign above stands for the batch in `make test`
def test_the_same_dag_again_submits_nothing_and_one_changed_payload_submits_one(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    """Runs after the campaign above (same output folder): only what changed is paid for."""
    env = {**airflow_env, **CAMPAIGN}
    if not (Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "segmind_e2e_batch" / "manifest.json").exists():
        dags_test("segmind_e2e_batch", env)
    dags_emulator.clear_calls()
    dags_test("segmind_e2e_batch", env)
    assert counts(dags_emulator)["submit"] == 0
    assert manifest(airflow_env, "segmind_e2e_batch")["reused"] == ITEMS

    dags_emulator.clear_calls()
    dags_test("segmind_e2e_batch", {**env, "SEGMIND_E2E_BATCH_CHANGED": "7"})
    assert counts(dags_emulator)["submit"] == 1
    changed = manifest(airflow_env, "segmind_e2e_batch")
    assert changed["reused"] == ITEMS - 1 and not changed["items"]["sku-0007"]["reused"]


@pytest.mark.slow  # `make test-e2e`: the campaign above stands for the batch in `make test`
def test_a_retry_after_the_worker_is_killed_mid_batch_pays_for_nothing_twice(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator, tmp_path: Path
) -> None:
    dags_emulator.reset()
    items, in_flight = 100, 50
    env = {
        **airflow_env,
        "SEGMIND_E2E_OUTPUT": str(tmp_path),
        "SEGMIND_E2E_BATCH_ITEMS": str(items),
        "SEGMIND_E2E_BATCH_IN_FLIGHT": str(in_flight),
    }
    date = "2026-04-01"
    with (tmp_path / "killed.log").open("w") as log:
        worker = subprocess.Popen(
            [AIRFLOW, "dags", "test", "segmind_e2e_batch", date],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 150
            while (
                counts(dags_emulator)["submit"] < in_flight + 5
                and worker.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)  # until its second round of submits is under way
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    paid = len(dags_emulator.requests())
    assert in_flight < paid < items, (tmp_path / "killed.log").read_text()[-3000:]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'segmind_e2e_batch' AND logical_date LIKE ?",
            (f"{date}%",),
        ).fetchone()
    retry = subprocess.run(
        [AIRFLOW, "tasks", "test", "segmind_e2e_batch", "campaign", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert retry.returncode == 0, (retry.stdout + retry.stderr)[-5000:]
    assert len(dags_emulator.requests()) == items  # every item paid for exactly once
    submits = [c for c in dags_emulator.calls() if c["endpoint"] == "submit"]
    # A submit the kill cut off mid-body was never read (logged unanswered, status 0) and never
    # paid; every submit the server read was answered, and there is one per item.
    assert sum(1 for c in submits if c["status"]) == items
    assert all(c["status"] in (0, 200) for c in submits)
    done = manifest(env, "segmind_e2e_batch")
    assert done["completed"] == items and done["cost"] == pytest.approx(items * PRICE)


@pytest.mark.slow  # `make test-e2e`: the campaign above stands for the batch in `make test`
def test_a_credit_floor_stops_a_batch_where_the_balance_says(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.reset()
    floor = 1.0
    dags_emulator.configure(credits=floor + 40 * PRICE)  # covers 40 images above the floor
    _, output = run_dags_test("segmind_e2e_batch_floor", airflow_env)
    assert "SegmindCreditFloorError" in output and "60 of 100 items were not started" in output
    assert "$2.0000 from the request history for 40 of 40 submitted items" in output
    submits = [c for c in dags_emulator.calls() if c["endpoint"] == "submit"]
    assert len(submits) == 40 and all(
        c["status"] == 200 for c in submits
    )  # none refused, none past the floor
    assert dags_emulator.config()["credits_remaining"] == pytest.approx(floor)
