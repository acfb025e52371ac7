"""E2E (distributed): the content pipeline's catalog scaled to a campaign of N flux-1.1-pro images.

Two DAGs make the same images, the two ways the provider offers:

    segmind_e2e_campaign        plan ─► generate (SegmindOperator, mapped over the jobs, deferrable)
    segmind_e2e_campaign_batch  plan ─► campaign (SegmindBatchOperator, one task, waves of 30)

Run by ``tests/e2e/test_distributed.py`` on a CeleryExecutor deployment. Each image is a catalog
product with its own seed (``seed + variant``), so every job is a distinct paid image.

One test seam, off unless ``SEGMIND_E2E_HOLD_DIR`` is set (the test sets it on one Celery worker
only): on its first try, the first generation task of each DAG to reach ``defer`` there stops
*after* the operator submitted and stored its request ids and *before* it defers. It writes
``<dag id>.json`` (its pid, map index and request ids) and waits, so the test can SIGKILL that
worker at exactly that point. ``defer`` is Airflow's public method the operators call there;
nothing of the provider is replaced. The mapped task holds at its only defer; the batch task at
the defer that follows its first resumed wave (it stored the first finished items and submitted
more), so the batch's first wave's trigger lives long enough to lose its triggerer first. The
batch task runs in queue ``holding``, which only that worker consumes, so its first try always
runs where the seam is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, NoReturn

from airflow.sdk import DAG, Param, task

from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
HOLD_DIR_ENV = "SEGMIND_E2E_HOLD_DIR"
#: The Celery queue only the worker with the seam consumes (tests/e2e/distributed_stack.py).
HOLDING_QUEUE = "holding"
#: The longest a held task waits to be killed before it defers anyway (the test then fails loudly).
HOLD_SECONDS = 240.0
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RETRY_DELAY = dt.timedelta(seconds=2)


class _Holding:
    """Mixin for an operator that can pause between submit and defer (the test seam above)."""

    running_ti: Any = None  # set by the entry point whose defer holds; None: this defer goes on

    def defer(self, **kwargs: Any) -> NoReturn:
        hold_dir = os.environ.get(HOLD_DIR_ENV)
        if hold_dir and self.running_ti is not None and self.running_ti.try_number == 1:
            fields = kwargs["trigger"].serialize()[1]
            request_ids = list(fields["requests"]) if "requests" in fields else [fields["request_id"]]
            _hold(Path(hold_dir), self.running_ti, request_ids)
        super().defer(**kwargs)  # type: ignore[misc]


class HoldableSegmindOperator(_Holding, SegmindOperator):
    """``SegmindOperator`` with the seam: it holds between its submit and its defer."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.running_ti = context["ti"]
        return super().execute(context)


class HoldableSegmindBatchOperator(_Holding, SegmindBatchOperator):
    """``SegmindBatchOperator`` with the seam: it holds between a resumed wave's submits and its defer."""

    def execute_wave(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.running_ti = context["ti"]
        return super().execute_wave(context, event)


def _hold(folder: Path, ti: Any, request_ids: list[str]) -> None:
    """Announce the submitted requests and wait to be killed; only the DAG's first task to get here holds."""
    record = {"pid": os.getpid(), "map_index": ti.map_index, "request_ids": request_ids}
    draft = folder / f"draft-{os.getpid()}.json"
    draft.write_text(json.dumps(record))
    try:
        os.link(draft, folder / f"{ti.dag_id}.json")  # published whole, and only once: a later task goes on
    except FileExistsError:
        return
    finally:
        draft.unlink()
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)


def plan_jobs(images: int, context: Any) -> list[dict[str, Any]]:
    """The content pipeline's scene prompts, repeated with new seeds until there are ``images`` jobs."""
    from segmind_pipeline import catalog  # the repository's dags/ folder, on PYTHONPATH in the test

    campaign = catalog.load_catalog(catalog.DEFAULT_CATALOG_PATH)
    day = context["dag_run"].run_after.date()
    folder = f"{OUT}/{context['run_id']}"
    products = catalog.build_jobs(campaign, day, folder)
    jobs = []
    for index in range(images):
        product, variant = products[index % len(products)], index // len(products)
        ratio = product["aspect_ratio"] if product["aspect_ratio"] != "match_input_image" else "1:1"
        jobs.append(
            {
                "model": "flux-1.1-pro",
                "payload": {
                    "prompt": product["scene_prompt"],
                    "aspect_ratio": ratio,
                    "output_format": "png",
                    "seed": product["seed"] + variant,
                },
                "output_path": f"{folder}/{product['product_id']}-{variant}.png",
            }
        )
    return jobs


def _campaign_dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        start_date=START,
        schedule=None,
        catchup=False,
        max_active_tasks=64,
        params={"images": Param(60, type="integer", minimum=1)},
        tags=["segmind", "e2e"],
    )


with _campaign_dag("segmind_e2e_campaign"):

    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        return plan_jobs(int(context["params"]["images"]), context)

    HoldableSegmindOperator.partial(
        task_id="generate",
        deferrable=True,
        pool="segmind",
        poll_interval=2.0,
        timeout=300,
        retries=2,
        retry_delay=RETRY_DELAY,
    ).expand_kwargs(plan())


with _campaign_dag("segmind_e2e_campaign_batch"):

    @task(task_id="plan")
    def plan_batch(**context: Any) -> dict[str, dict[str, Any]]:
        """The same jobs as the mapped DAG's, keyed by their file name (``<product>-<variant>``)."""
        jobs = plan_jobs(int(context["params"]["images"]), context)
        return {Path(job["output_path"]).stem: job["payload"] for job in jobs}

    HoldableSegmindBatchOperator(
        task_id="campaign",
        model="flux-1.1-pro",
        payloads=plan_batch(),
        output_dir=f"{OUT}/{{{{ run_id }}}}",
        deferrable=True,
        worker_wait=0,  # every wave defers: the seam sits between a wave's submits and its defer
        max_in_flight=30,
        poll_interval=2.0,
        timeout=300,
        queue=HOLDING_QUEUE,
        retries=2,
        retry_delay=RETRY_DELAY,
    )
