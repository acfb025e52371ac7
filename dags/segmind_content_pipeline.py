"""Daily marketing assets from a product catalog, generated with Segmind and published as a gallery.

    plan ─► generate (SegmindOperator, mapped, deferrable, pool "segmind")
                 ─► render (Pillow: square, story 9:16, link card 1.91:1, thumbnail; mapped)
                        ─► publish (manifest.json + index.html; emits the asset event)

A product that fails (a content block, say) does not sink the run: ``render`` and ``publish`` run
whatever the generation outcome (``all_done``), the failed product is listed in the manifest and
the gallery with its reason, and the run ends ``success`` because its leaf succeeded. Configuration
(Airflow Variable first, then environment variable): ``segmind_publish_uri`` / ``SEGMIND_PUBLISH_URI``
(any ObjectStoragePath URI, local folder by default), ``segmind_publish_conn_id`` /
``SEGMIND_PUBLISH_CONN_ID``, ``segmind_output_dir`` / ``SEGMIND_OUTPUT_DIR`` (originals),
``segmind_catalog`` / ``SEGMIND_CATALOG``, ``segmind_expected_duration`` / ``SEGMIND_EXPECTED_DURATION``
(seconds per image, for a time-scaled emulator). See docs/pipeline.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import Asset, ObjectStoragePath, Param, TriggerRule, Variable, dag, task
from airflow.sdk.definitions.context import Context
from segmind_pipeline import catalog, publishing, settings

from segmind_provider.operators.segmind import SegmindOperator

log = logging.getLogger(__name__)

DAG_ID = "segmind_content_pipeline"
SEGMIND_CONN_ID = "segmind_default"
FAILURE_XCOM_KEY = "segmind_failure"

#: Downstream DAGs can ``schedule=[SEGMIND_MARKETING_ASSETS]``; each event's ``extra`` carries the
#: manifest and gallery URIs and the counts.
SEGMIND_MARKETING_ASSETS = Asset(name="segmind_marketing_assets", uri="segmind://content-pipeline/published")


def _variable(key: str) -> str | None:
    value = Variable.get(key, default=None)
    return str(value) if value else None


def _run_date(context: Context) -> dt.date:
    """The run's date: the logical date, or when the run was asked for (manual runs may have none)."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date()


def _publish_root(run_date: dt.date) -> ObjectStoragePath:
    uri = settings.publish_uri(
        _variable(settings.PUBLISH_URI_VARIABLE), _variable(settings.OUTPUT_DIR_VARIABLE)
    )
    conn_id = settings.publish_conn_id(_variable(settings.PUBLISH_CONN_VARIABLE))
    return ObjectStoragePath(uri.rstrip("/") + "/" + run_date.isoformat(), conn_id=conn_id)


def _record_failure(context: Context) -> None:
    """on_failure_callback of ``generate``: keep the reason where ``render`` can read it."""
    exc = context.get("exception")
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the generation task failed"
    context["ti"].xcom_push(key=FAILURE_XCOM_KEY, value=reason)


def _failure_reason(ti: Any, map_index: int) -> tuple[str, str | None]:
    """Why product ``map_index`` has no image, and its request id if one was submitted."""
    request_id = ti.xcom_pull(task_ids="generate", map_indexes=map_index, key="request_id")
    reason = ti.xcom_pull(task_ids="generate", map_indexes=map_index, key=FAILURE_XCOM_KEY)
    if not reason and request_id:
        from segmind_provider.hooks.segmind import SegmindHook

        try:
            answer = SegmindHook(segmind_conn_id=SEGMIND_CONN_ID).get_status(request_id)
            reason = answer.get("error") or f"request ended {answer.get('status')}"
        except Exception as exc:
            reason = f"generation failed; status unavailable ({type(exc).__name__})"
    return str(reason or "generation failed before a request was submitted; see the task log"), request_id


def _operator_kwargs(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": job["model"],
        "payload": job["payload"],
        "output_path": job["output_path"],
        "expected_duration": job.get("expected_duration"),
    }


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["segmind", "example"],
    params={
        "products": Param(
            [], type="array", description="Product ids to generate; empty means the whole catalog."
        )
    },
    doc_md=__doc__,
)
def segmind_content_pipeline() -> None:
    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        """Read the catalog and render each prompt with the run's date; one job per product."""
        run_date = _run_date(context)  # type: ignore[arg-type]
        path = settings.catalog_path(_variable(settings.CATALOG_VARIABLE)) or catalog.DEFAULT_CATALOG_PATH
        campaign = catalog.load_catalog(path)
        raw_dir = settings.output_root(_variable(settings.OUTPUT_DIR_VARIABLE)).rstrip("/")
        jobs = catalog.build_jobs(campaign, run_date, f"{raw_dir}/raw/{run_date.isoformat()}")
        wanted = set(context["params"].get("products") or [])
        if wanted:
            unknown = wanted - {j["product_id"] for j in jobs}
            if unknown:
                raise ValueError(f"unknown product ids in params.products: {sorted(unknown)}")
            jobs = [j for j in jobs if j["product_id"] in wanted]
        expected = settings.expected_duration(_variable(settings.EXPECTED_DURATION_VARIABLE))
        for job in jobs:
            job["campaign"] = campaign.campaign
            job["expected_duration"] = expected
        log.info("planned %d products for %s", len(jobs), run_date)
        return jobs

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def render(job: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Make the social formats of one product, or record why it has none."""
        ti = context["ti"]
        result = ti.xcom_pull(task_ids="generate", map_indexes=ti.map_index)
        if not result or not result.get("output_uris"):
            reason, request_id = _failure_reason(ti, ti.map_index)
            log.warning("product %s not generated: %s", job["product_id"], reason)
            return publishing.product_record(job, status="failed", request_id=request_id, error=reason)

        source = ObjectStoragePath(result["output_uris"][0])
        return publishing.publish_product(
            _publish_root(_run_date(context)),  # type: ignore[arg-type]
            job,
            source.read_bytes(),
            suffix=source.suffix,
            request_id=result.get("request_id"),
            inference_time=(result.get("metrics") or {}).get("inference_time"),
        )

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[SEGMIND_MARKETING_ASSETS])
    def publish(jobs: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """Write the manifest and the gallery page, and tell downstream DAGs where they are."""
        ti = context["ti"]
        records = []
        for index, job in enumerate(jobs):
            record = ti.xcom_pull(task_ids="render", map_indexes=index)
            records.append(
                record
                or publishing.product_record(
                    job, status="failed", error="post-processing failed; see its log"
                )
            )
        run_date = _run_date(context)  # type: ignore[arg-type]
        root = _publish_root(run_date)
        manifest = publishing.build_manifest(
            records,
            dag_id=DAG_ID,
            run_id=context["run_id"],
            run_date=run_date,
            campaign=jobs[0].get("campaign", "") if jobs else "",
            brand=jobs[0].get("brand", "") if jobs else "",
            publish_uri=str(root),
        )
        manifest_path, gallery_path = publishing.write_manifest_and_gallery(root, manifest)
        summary = {"manifest": str(manifest_path), "gallery": str(gallery_path), **manifest["counts"]}
        context["outlet_events"][SEGMIND_MARKETING_ASSETS].extra = summary
        log.info("published %s", summary)
        return summary

    jobs = plan()
    generate = SegmindOperator.partial(
        task_id="generate",
        segmind_conn_id=SEGMIND_CONN_ID,
        deferrable=True,
        pool=settings.POOL_NAME,
        retries=2,
        retry_delay=dt.timedelta(seconds=15),
        on_failure_callback=_record_failure,
    ).expand_kwargs(jobs.map(_operator_kwargs))
    rendered = render.expand(job=jobs)
    generate >> rendered
    rendered >> publish(jobs)  # type: ignore[arg-type]  # an XComArg resolves to the list at run time


segmind_content_pipeline()
