"""End to end: `airflow dags test` of a DAG with SegmindWorkflowOperator against the emulator's workflow
(the same time-scaled emulator and Airflow home as test_dags_test.py: the session fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dags_runner import dags_test, xcom
from PIL import Image

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_workflow_defers_resumes_stores_both_images_and_passes_its_json_on(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.clear_calls()
    output = dags_test("segmind_e2e_workflow", airflow_env)
    assert "deferred" in output.lower() and ": success after" in output
    assert "workflow steps: 2; stored: ['cutout', 'image']" in output  # the downstream task's line
    endpoints = [c["endpoint"] for c in dags_emulator.calls()]
    assert endpoints.count("workflow") == 1 and endpoints.count("workflow_poll") >= 2
    out = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "workflow"
    with Image.open(out / "image.png") as image, Image.open(out / "cutout.png") as cutout:
        assert image.format == cutout.format == "PNG" and cutout.mode == "RGBA"
    result = xcom(airflow_env, "segmind_e2e_workflow", "return_value")
    assert result["output"]["steps"] == 2 and result["output_uris"]["cutout"] == [str(out / "cutout.png")]
    assert xcom(airflow_env, "segmind_e2e_workflow", "request_id") == result["request_id"]
