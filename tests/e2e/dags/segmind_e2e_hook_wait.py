"""E2E: plain Python waits through the hook: ``generate`` in a @task, ``submit`` + ``wait`` in a PythonOperator."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import dag, task

from segmind_provider.hooks.segmind import SegmindHook

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14"))
PAYLOAD = {"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "output_format": "png", "seed": 3}


def submit_and_wait() -> dict[str, Any]:
    hook = SegmindHook()
    request_id = hook.submit("flux-1.1-pro", PAYLOAD)["request_id"]
    result = hook.wait(request_id, timeout=120, model="flux-1.1-pro", expected_duration=EXPECTED)
    return {"request_id": request_id, "output": result["output"]}


@dag(
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["segmind", "e2e"]
)
def segmind_e2e_hook_wait() -> None:
    @task
    def generate() -> dict[str, Any]:
        return SegmindHook().generate(
            "flux-1.1-pro",
            PAYLOAD,
            timeout=120,
            output_path=OUT + "/hook/lighthouse.png",
            expected_duration=EXPECTED,
        )

    generate()
    PythonOperator(task_id="submit_and_wait", python_callable=submit_and_wait)


segmind_e2e_hook_wait()
