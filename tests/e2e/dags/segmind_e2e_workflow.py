"""E2E: a PixelFlow workflow (the emulator's flux-then-background-removal chain) run deferred, its two
images stored on local disk and its JSON output passed downstream."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from segmind_provider.operators.workflow import SegmindWorkflowOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
#: Two steps on the time-scaled emulator: flux-1.1-pro (~14 s) then background removal (~0.6 s).
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14")) * 15 / 14

with DAG(
    dag_id="segmind_e2e_workflow",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["segmind", "e2e"],
):
    run = SegmindWorkflowOperator(
        task_id="generate",
        workflow_id="emulator-product-cutout-v1",
        inputs={"prompt": "a red sneaker, {{ dag.dag_id }}", "seed": 3},
        output_dir=OUT + "/workflow",
        poll_interval=1.0,
        timeout=120,
        expected_duration=EXPECTED,
    )

    @task
    def report(result: dict[str, Any]) -> int:
        """Downstream reads the JSON output and the stored files from XCom."""
        print(f"workflow steps: {result['output']['steps']}; stored: {sorted(result['output_uris'])}")
        return int(result["output"]["steps"])

    report(run.output)
