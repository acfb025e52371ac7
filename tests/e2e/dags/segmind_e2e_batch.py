"""E2E: a campaign as one SegmindBatchOperator task (the emulator stands in for Segmind).

``SEGMIND_E2E_BATCH_ITEMS`` sets the size (500 by default), ``SEGMIND_E2E_BATCH_IN_FLIGHT`` the
requests in flight at once (250), so a small campaign still takes several waves, and
``SEGMIND_E2E_BATCH_CHANGED`` names an item whose prompt changes, so a test can run the same DAG
again and change one payload, ``SEGMIND_E2E_WORKER_WAIT`` the operator's ``worker_wait``.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindBatchOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
EXPECTED = float(os.environ.get("SEGMIND_E2E_EXPECTED_DURATION", "14"))
ITEMS = int(os.environ.get("SEGMIND_E2E_BATCH_ITEMS", "500"))
IN_FLIGHT = int(os.environ.get("SEGMIND_E2E_BATCH_IN_FLIGHT", "250"))
CHANGED = os.environ.get("SEGMIND_E2E_BATCH_CHANGED")
#: 0 (default here): every wave defers, the path these tests follow through Airflow; the operator's
#: own default waits for waves due within seconds in the worker (docs/operator.md).
WORKER_WAIT = float(os.environ.get("SEGMIND_E2E_WORKER_WAIT", "0"))


def campaign(items: int, changed: str | None = None) -> dict[str, dict[str, Any]]:
    """Product shots keyed by SKU; small images keep the emulator's drawing cheap."""
    payloads = {
        f"sku-{i:04d}": {
            "prompt": f"studio product shot {i}, soft light",
            "aspect_ratio": "custom",
            "width": 256,
            "height": 256,
            "output_format": "jpg",
            "seed": i,
        }
        for i in range(items)
    }
    if changed:
        payloads[f"sku-{int(changed):04d}"]["prompt"] += ", at night"
    return payloads


for dag_id, items, extra in (
    ("segmind_e2e_batch", ITEMS, {}),
    ("segmind_e2e_batch_floor", 100, {"credit_floor": 1.0, "max_in_flight": 20}),
):
    with DAG(
        dag_id=dag_id,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        schedule=None,
        catchup=False,
        tags=["segmind", "e2e"],
    ):
        SegmindBatchOperator(
            task_id="campaign",
            model="flux-1.1-pro",
            payloads=campaign(items, CHANGED),
            output_dir=f"{OUT}/{dag_id}",
            deferrable=True,
            worker_wait=WORKER_WAIT,
            max_in_flight=extra.get("max_in_flight", IN_FLIGHT),
            credit_floor=extra.get("credit_floor"),
            poll_interval=1.0,
            timeout=120,
            expected_duration=EXPECTED,
        )
