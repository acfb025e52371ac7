"""Three posters, a person picks, only the approved ones go on: ``SegmindReviewOperator`` in a DAG.

``posters`` (a ``SegmindBatchOperator``, flux-1.1-pro) stores three images under
``<output dir>/review/<run id>/``; ``review`` shows them in the Airflow UI (Browse → Required
Actions) and waits: **Approve all**, or pick posters in *Reject*, give a *Reason* and **Reject
selected**. ``publish`` receives the approved posters (the batch's manifest with only those) and the
rejected ones with the reason (its XCom, and its log). The output dir is the Airflow
Variable ``segmind_output_dir``, else ``$SEGMIND_OUTPUT_DIR``, else ``$AIRFLOW_HOME/segmind-output``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from airflow.sdk import DAG, task
from segmind_pipeline import settings

from segmind_provider.operators.review import SegmindReviewOperator
from segmind_provider.operators.segmind import SegmindBatchOperator

POSTERS = {
    "lighthouse": "a lighthouse at dusk, travel poster, bold flat colours",
    "harbour": "a fishing harbour at dawn, travel poster, bold flat colours",
    "dunes": "wind-shaped sand dunes under a pale sky, travel poster, bold flat colours",
}

with DAG(
    dag_id="segmind_review",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["segmind", "example"],
    user_defined_macros={"segmind_output_root": settings.segmind_output_root},
    doc_md=__doc__,
):
    posters = SegmindBatchOperator(
        task_id="posters",
        model="flux-1.1-pro",
        payloads={
            key: {"prompt": prompt, "aspect_ratio": "2:3", "output_format": "png", "seed": 7}
            for key, prompt in POSTERS.items()
        },
        output_dir="{{ segmind_output_root() }}/review/{{ run_id | replace(':', '-') }}",
    )
    review = SegmindReviewOperator(
        task_id="review",
        outputs=posters.output,
        subject="Which posters go on the site?",
        body="Tonight's travel posters ({{ run_id }}).",
        response_timeout=dt.timedelta(hours=20),
        # An answer given seconds after the step parked can be lost to Airflow's stale executor event
        # (as in apache/airflow#72716): the retry asks again instead of failing the run.
        retries=1,
        retry_delay=dt.timedelta(seconds=10),
    )

    @task
    def publish(decision: dict[str, Any]) -> dict[str, Any]:
        """What a publishing step gets: the approved posters' files, and what was rejected and why."""
        approved = decision["approved"]
        received = {
            "approved": {key: approved["items"][key]["output_uris"] for key in approved["order"]},
            "rejected": decision["rejected"],
            "reviewed_by": decision["reviewed_by"],
        }
        print(json.dumps(received, indent=2))
        return received

    publish(review.output)
