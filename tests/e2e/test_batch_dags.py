"""End to end: a 500-item campaign as one SegmindBatchOperator task under `airflow dags test`.

The emulator runs in this test process (time-scaled, as in test_dags_test.py, whose fixtures these
tests share); `airflow dags test` runs each deferral's trigger in process and resumes the task with its
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
import test_dags_test as shared
from PIL import Image

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = pytest.mark.e2e

# The same time-scaled emulator and Airflow home fixtures as the other `dags test` tests.
emulator = shared.emulator
airflow_env = shared.airflow_env
AIRFLOW = shared.AIRFLOW
dags_test = shared.dags_test

PRICE = 0.05  # flux-1.1-pro, in the catalog and in the emulator


def manifest(env: dict[str, str], dag_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (Path(env["SEGMIND_E2E_OUTPUT"]) / dag_id / "manifest.json").read_text()
    )
    return data


def counts(emulator: SegmindEmulator) -> dict[str, int]:
    calls = emulator.calls()
    return {name: sum(1 for c in calls if c["endpoint"] == name) for name in ("submit", "media", "history")}


def test_a_500_item_campaign_is_one_task_that_stores_each_image_once(
    airflow_env: dict[str, str], emulator: SegmindEmulator
) -> None:
    emulator.reset()
    output = dags_test("segmind_e2e_batch", airflow_env)
    seen = counts(emulator)
    assert seen["submit"] == 500 and len(emulator.requests()) == 500
    assert seen["media"] == 500  # each image downloaded and stored once
    done = manifest(airflow_env, "segmind_e2e_batch")
    assert done["completed"] == 500 and done["failed"] == 0 and done["cost"] == pytest.approx(500 * PRICE)
    assert output.count("[DAG TEST] running trigger in line") == done["waves"] > 1  # one trigger per wave
    folder = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "segmind_e2e_batch"
    assert len(list(folder.glob("sku-*.jpg"))) == 500
    with Image.open(folder / "sku-0499.jpg") as image:
        assert image.format == "JPEG" and image.size == (256, 256)


def test_the_same_dag_again_submits_nothing_and_one_changed_payload_submits_one(
    airflow_env: dict[str, str], emulator: SegmindEmulator
) -> None:
    """Runs after the campaign above (same output folder): only what changed is paid for."""
    if not (Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "segmind_e2e_batch" / "manifest.json").exists():
        dags_test("segmind_e2e_batch", airflow_env)
    emulator.clear_calls()
    dags_test("segmind_e2e_batch", airflow_env)
    assert counts(emulator)["submit"] == 0
    assert manifest(airflow_env, "segmind_e2e_batch")["reused"] == 500

    emulator.clear_calls()
    dags_test("segmind_e2e_batch", {**airflow_env, "SEGMIND_E2E_BATCH_CHANGED": "7"})
    assert counts(emulator)["submit"] == 1
    changed = manifest(airflow_env, "segmind_e2e_batch")
    assert changed["reused"] == 499 and not changed["items"]["sku-0007"]["reused"]


def test_a_retry_after_the_worker_is_killed_mid_batch_pays_for_nothing_twice(
    airflow_env: dict[str, str], emulator: SegmindEmulator, tmp_path: Path
) -> None:
    emulator.reset()
    env = {**airflow_env, "SEGMIND_E2E_OUTPUT": str(tmp_path), "SEGMIND_E2E_BATCH_ITEMS": "300"}
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
            while counts(emulator)["submit"] < 260 and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # until its second round of submits is under way
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    paid = len(emulator.requests())
    assert 250 < paid < 300, (tmp_path / "killed.log").read_text()[-3000:]
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
    assert len(emulator.requests()) == 300  # every item paid for exactly once
    assert counts(emulator)["submit"] == 300
    done = manifest(env, "segmind_e2e_batch")
    assert done["completed"] == 300 and done["cost"] == pytest.approx(300 * PRICE)


def test_a_credit_floor_stops_a_batch_where_the_balance_says(
    airflow_env: dict[str, str], emulator: SegmindEmulator
) -> None:
    emulator.reset()
    floor = 1.0
    emulator.configure(credits=floor + 40 * PRICE)  # covers 40 images above the floor
    run = subprocess.run(
        [AIRFLOW, "dags", "test", "segmind_e2e_batch_floor"],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "SegmindCreditFloorError" in output and "60 of 100 items were not started" in output
    assert "$2.0000 from the request history for 40 of 40 submitted items" in output
    submits = [c for c in emulator.calls() if c["endpoint"] == "submit"]
    assert len(submits) == 40 and all(
        c["status"] == 200 for c in submits
    )  # none refused, none past the floor
    assert emulator.config()["credits_remaining"] == pytest.approx(floor)
