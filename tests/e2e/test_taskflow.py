"""End to end: the TaskFlow decorators and the hook's ``generate``/``wait`` under `airflow dags test`.

The same time-scaled emulator and Airflow home as test_dags_test.py (the session fixtures in conftest.py); a few
small images each, so the module stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dags_runner import dags_test, xcom
from PIL import Image

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def endpoints(dags_emulator: SegmindEmulator) -> list[str]:
    return [call["endpoint"] for call in dags_emulator.calls()]


def test_decorated_tasks_defer_map_and_hand_their_results_downstream(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.clear_calls()
    output = dags_test("segmind_e2e_taskflow", airflow_env)
    assert output.count("[DAG TEST] running trigger in line") >= 3  # two mapped images and the batch deferred
    seen = endpoints(dags_emulator)
    # two mapped images and three batch items, each paid for and stored once
    assert seen.count("submit") == 5 and seen.count("media") == 5
    out = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "taskflow"
    for index in (0, 1):
        with Image.open(out / f"animal-{index}.png") as image:
            assert image.format == "PNG"
    manifest: dict[str, Any] = json.loads((out / "batch" / "manifest.json").read_text())
    assert manifest["completed"] == 3 and manifest["failed"] == 0
    summary = xcom(airflow_env, "segmind_e2e_taskflow", "return_value", task_id="summary")
    assert summary["batch_completed"] == 3
    assert summary["uris"] == [str(out / f"animal-{index}.png") for index in (0, 1)]
    sent = sorted(request["body"]["prompt"] for request in dags_emulator.requests())
    assert "a blue whale" in sent and "a red fox" in sent  # the functions' payloads, one per map index


def test_plain_python_generates_and_waits_through_the_hook(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.clear_calls()
    output = dags_test("segmind_e2e_hook_wait", airflow_env)
    assert "[DAG TEST] running trigger in line" not in output  # nothing deferred: the wait ran in the task
    assert output.count(": success after") == 2  # the trigger's own lines, logged by the task
    seen = endpoints(dags_emulator)
    assert seen.count("submit") == 2 and seen.count("status") >= 2 and seen.count("result") == 2
    generated = xcom(airflow_env, "segmind_e2e_hook_wait", "return_value", task_id="generate")
    assert generated["status"] == "COMPLETED" and generated["model"] == "flux-1.1-pro"
    (uri,) = generated["output_uris"]
    with Image.open(uri.removeprefix("file://")) as image:
        assert image.format == "PNG"
    waited = xcom(airflow_env, "segmind_e2e_hook_wait", "return_value", task_id="submit_and_wait")
    assert waited["request_id"] and str(waited["output"]).startswith("http")
