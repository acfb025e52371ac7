"""E2E (distributed): the content pipeline's catalog scaled to a campaign of N flux-1.1-pro images.

    plan (the pipeline's products' scene prompts x variants, one text-to-image job per image)
        ─► generate (SegmindOperator, mapped over the jobs, deferrable, pool "segmind")

Run by ``tests/e2e/test_distributed.py`` on a CeleryExecutor deployment. Each image is a catalog
product with its own seed (``seed + variant``), so every job is a distinct paid image.

One test seam, off unless ``SEGMIND_E2E_HOLD_DIR`` is set (the test sets it on one Celery worker
only): the first generation task to reach ``defer`` there, on its first try, stops *after* the
operator submitted and stored its request id and *before* it defers. It writes ``held.json`` (its
pid, map index and request id) and waits, so the test can SIGKILL that worker at exactly that
point. ``defer`` is Airflow's public method the operator calls there; nothing of the provider is
replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, NoReturn

from airflow.sdk import DAG, Param, task

from segmind_provider.operators.segmind import SegmindOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
HOLD_DIR_ENV = "SEGMIND_E2E_HOLD_DIR"
#: The longest a held task waits to be killed before it defers anyway (the test then fails loudly).
HOLD_SECONDS = 240.0


class HoldableSegmindOperator(SegmindOperator):
    """``SegmindOperator`` that can pause between submit and defer (the test seam above)."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.running_ti = context["ti"]
        return super().execute(context)

    def defer(self, **kwargs: Any) -> NoReturn:
        hold_dir = os.environ.get(HOLD_DIR_ENV)
        if hold_dir and self.running_ti.try_number == 1:
            request_id = kwargs["trigger"].serialize()[1]["request_id"]
            _hold(Path(hold_dir), self.running_ti, request_id)
        super().defer(**kwargs)


def _hold(folder: Path, ti: Any, request_id: str) -> None:
    """Announce the submitted request and wait to be killed; only the first task to get here holds."""
    record = {"pid": os.getpid(), "map_index": ti.map_index, "request_id": request_id}
    draft = folder / f"draft-{os.getpid()}.json"
    draft.write_text(json.dumps(record))
    try:
        os.link(draft, folder / "held.json")  # published whole, and only once: a later task goes on
    except FileExistsError:
        return
    finally:
        draft.unlink()
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)


with DAG(
    dag_id="segmind_e2e_campaign",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    schedule=None,
    catchup=False,
    max_active_tasks=64,
    params={"images": Param(60, type="integer", minimum=1)},
    tags=["segmind", "e2e"],
):

    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        """The content pipeline's scene prompts, repeated with new seeds until there are ``images`` jobs."""
        from segmind_pipeline import catalog  # the repository's dags/ folder, on PYTHONPATH in the test

        campaign = catalog.load_catalog(catalog.DEFAULT_CATALOG_PATH)
        day = context["dag_run"].run_after.date()
        folder = f"{OUT}/{context['run_id']}"
        products = catalog.build_jobs(campaign, day, folder)
        jobs = []
        for index in range(int(context["params"]["images"])):
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

    HoldableSegmindOperator.partial(
        task_id="generate",
        deferrable=True,
        pool="segmind",
        poll_interval=2.0,
        timeout=300,
        retries=2,
        retry_delay=dt.timedelta(seconds=2),
    ).expand_kwargs(plan())
