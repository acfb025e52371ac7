"""E2E: dynamic task mapping over 5 prompts, one image per map index."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14"))
PROMPTS = ["a red fox", "a blue whale", "a green parrot", "a golden eagle", "a white tiger"]

with DAG(
    dag_id="segmind_e2e_mapped",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["segmind", "e2e"],
):
    SegmindOperator.partial(
        task_id="generate",
        model="flux-1.1-pro",
        output_path=OUT + "/mapped/image-{{ ti.map_index }}",
        deferrable=True,
        poll_interval=1.0,
        timeout=120,
        expected_duration=EXPECTED,
    ).expand(
        payload=[
            {"prompt": p, "aspect_ratio": "4:3", "output_format": "jpg", "seed": i}
            for i, p in enumerate(PROMPTS)
        ]
    )
