"""E2E: the TaskFlow decorators, one mapped with ``.expand()`` and one batch, both deferred."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import dag, task

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14"))
WAIT = {"deferrable": True, "poll_interval": 1.0, "timeout": 120, "expected_duration": EXPECTED}


@dag(
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["segmind", "e2e"]
)
def segmind_e2e_taskflow() -> None:
    @task.segmind(model="flux-1.1-pro", output_path=OUT + "/taskflow/animal-{{ ti.map_index }}", **WAIT)
    def animal(prompt: str, seed: int) -> dict[str, Any]:
        return {"prompt": prompt, "aspect_ratio": "1:1", "output_format": "png", "seed": seed}

    # worker_wait=0: every wave defers, as the test asks (short waves would wait in the worker).
    @task.segmind_batch(model="flux-1.1-pro", output_dir=OUT + "/taskflow/batch", worker_wait=0, **WAIT)
    def shots(count: int) -> dict[str, dict[str, Any]]:
        return {
            f"sku-{i}": {"prompt": f"product shot {i}", "aspect_ratio": "custom", "width": 256, "height": 256}
            for i in range(count)
        }

    @task
    def summary(images: list[dict[str, Any]], manifest: dict[str, Any]) -> dict[str, Any]:
        """Downstream of both: what a TaskFlow user reads from the decorated tasks' XComs."""
        return {
            "uris": sorted(uri for image in images for uri in image["output_uris"]),
            "batch_completed": manifest["completed"],
        }

    summary(animal.partial(seed=7).expand(prompt=["a red fox", "a blue whale"]), shots(3))


segmind_e2e_taskflow()
