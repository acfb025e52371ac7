"""E2E: one deferred flux-1.1-pro image stored on local disk (the emulator stands in for Segmind)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.runtime import reset_process_state

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
#: The emulator runs time-scaled in the tests; tell the poll schedule how long a job takes there.
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14"))
#: How long this process shares resolved connection settings (60 s unless a test says): a test sets
#: it short so that a short job outlives the worker's lookup.
if "SEGMIND_E2E_SETTINGS_TTL" in os.environ:
    reset_process_state(settings_ttl=float(os.environ["SEGMIND_E2E_SETTINGS_TTL"]))

with DAG(
    dag_id="segmind_e2e_single",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["segmind", "e2e"],
):
    SegmindOperator(
        task_id="generate",
        model="flux-1.1-pro",
        payload={
            "prompt": "a lighthouse at dawn, {{ dag.dag_id }}",
            "aspect_ratio": "custom",
            "width": 640,
            "height": 384,
            "output_format": "png",
            "seed": 7,
        },
        output_path=OUT + "/single/hero",
        deferrable=True,
        poll_interval=1.0,
        timeout=120,
        expected_duration=EXPECTED,
    )
