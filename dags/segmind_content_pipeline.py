"""Nightly marketing assets from the product photos a brand owns, made with Segmind, approved by a person.

    plan ─► product, xN (one mapped task group per product photo):
    │         cutout (bg-removal-v2, the photo in) ─► scene (flux-kontext-pro, the cut-out in)
    │                                              ─► caption (llava-v1.6, the scene in)
    ├─► hero ─► hero_upscale (clarity-upscaler) and hero_clip (kling-o1-image-to-video), the hero's scene in
    └─► candidates (a stage strip per product, uploaded) ─► review (human-in-the-loop approval)
                                                             ─► publish (formats, manifest, gallery, asset event)

Every Segmind task is a deferrable ``SegmindOperator`` in the ``segmind`` pool; files move between
stages through ``input_files`` (each stage's stored output is the next stage's input). A product
that fails (a content block, say) does not sink the run: the review lists it with its reason and the
rest is published once a reviewer approves in the Airflow UI (Required Actions). Reject, or no answer
within 20 hours, publishes nothing. Demo mode (Variable ``segmind_auto_approve`` / environment
``SEGMIND_AUTO_APPROVE``) approves automatically and says so in the task log. Configuration
(Airflow Variable first, then environment variable): ``segmind_publish_uri``, ``segmind_publish_conn_id``,
``segmind_output_dir``, ``segmind_catalog``; see docs/pipeline.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, ObjectStoragePath, Param, TriggerRule, Variable, dag, task, task_group
from airflow.sdk.definitions.context import Context
from airflow.sdk.exceptions import AirflowSkipException
from segmind_pipeline import catalog, imaging, publishing, review, settings, stages

from segmind_provider.exceptions import SegmindError
from segmind_provider.operators.segmind import SegmindOperator

log = logging.getLogger(__name__)

DAG_ID = "segmind_content_pipeline"
SEGMIND_CONN_ID = "segmind_default"
FAILURE_XCOM_KEY = "segmind_failure"
REVIEW_WINDOW = dt.timedelta(hours=20)

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
    """on_failure_callback of the Segmind tasks: keep the reason where the review and publish read it."""
    exc = context.get("exception")
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the task failed"
    context["ti"].xcom_push(key=FAILURE_XCOM_KEY, value=reason)


def stage_output(ti: Any, task_id: str) -> str:
    """Template macro: where this product's earlier stage stored its output (the next stage's input)."""
    result = ti.xcom_pull(task_ids=f"product.{task_id}", map_indexes=ti.map_index) or {}
    uris = result.get("output_uris") or []
    if not uris:
        raise ValueError(f"stage {task_id!r} of this product stored no file")
    return str(uris[0])


def _outputs(ti: Any, jobs: list[dict[str, Any]]) -> list[stages.ProductOutputs]:
    """Every product's stage outputs, read from the stage tasks' results."""

    def result_of(task_id: str, map_index: int | None) -> Any:
        return ti.xcom_pull(task_ids=task_id, map_indexes=-1 if map_index is None else map_index)

    def reason_of(task_id: str, map_index: int | None) -> str:
        index = -1 if map_index is None else map_index
        reason = ti.xcom_pull(task_ids=task_id, map_indexes=index, key=FAILURE_XCOM_KEY)
        if reason:
            return str(reason)
        if task_id.startswith("hero_"):
            return "not run: the hero's scene was not generated"
        return "not run: an earlier stage of this product failed"

    return [stages.collect(job, i, result_of=result_of, reason_of=reason_of) for i, job in enumerate(jobs)]


class NightlyApproval(ApprovalOperator):
    """The standard provider's approval step; in demo mode it approves itself and says so."""

    def execute(self, context: Context) -> Any:
        if not settings.auto_approve(_variable(settings.AUTO_APPROVE_VARIABLE)):
            return super().execute(context)
        self.log.warning(
            "Demo mode (%s / Variable %s): approving tonight's set automatically, without a reviewer",
            settings.AUTO_APPROVE_ENV,
            settings.AUTO_APPROVE_VARIABLE,
        )
        event = {
            "chosen_options": [self.APPROVE],
            "params_input": {},
            "responded_at": dt.datetime.now(dt.timezone.utc),
            "responded_by_user": {"id": "demo-mode", "name": "approved automatically (demo mode)"},
        }
        return self.execute_complete(context, event)


STAGE_DEFAULTS: dict[str, Any] = {
    "segmind_conn_id": SEGMIND_CONN_ID,
    "deferrable": True,
    "pool": settings.POOL_NAME,
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=15),
    "on_failure_callback": _record_failure,
}


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["segmind", "example"],
    params={
        "products": Param([], type="array", description="Product ids to run; empty means the whole catalog.")
    },
    user_defined_macros={"stage_output": stage_output},
    doc_md=__doc__,
)
def segmind_content_pipeline() -> None:
    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        """Read the catalog and fill its templates with the run's date; one job per product."""
        run_date = _run_date(context)  # type: ignore[arg-type]
        path = settings.catalog_path(_variable(settings.CATALOG_VARIABLE)) or catalog.DEFAULT_CATALOG_PATH
        raw_dir = settings.output_root(_variable(settings.OUTPUT_DIR_VARIABLE)).rstrip("/")
        jobs = catalog.build_jobs(
            catalog.load_catalog(path), run_date, f"{raw_dir}/raw/{run_date.isoformat()}"
        )
        wanted = set(context["params"].get("products") or [])
        if wanted:
            unknown = wanted - {j["product_id"] for j in jobs}
            if unknown:
                raise ValueError(f"unknown product ids in params.products: {sorted(unknown)}")
            jobs = [j for j in jobs if j["product_id"] in wanted]
        log.info("planned %d products for %s", len(jobs), run_date)
        return jobs

    @task_group(group_id="product")
    def product(
        photo: str, cutout_path: str, scene: dict[str, Any], scene_path: str, caption: dict[str, Any]
    ) -> None:
        """One product photo's stages; each stage's stored output is the next one's input file."""
        cut = SegmindOperator(
            task_id="cutout",
            model=catalog.CUTOUT_MODEL,
            payload={},
            input_files={"image": photo},
            output_path=cutout_path,
            **STAGE_DEFAULTS,
        )
        composed = SegmindOperator(
            task_id="scene",
            model=catalog.SCENE_MODEL,
            payload=scene,
            input_files={"input_image": "{{ stage_output(ti, 'cutout') }}"},
            output_path=scene_path,
            **STAGE_DEFAULTS,
        )
        captioned = SegmindOperator(
            task_id="caption",
            model=catalog.CAPTION_MODEL,
            payload=caption,
            input_files={"images": "{{ stage_output(ti, 'scene') }}"},
            **STAGE_DEFAULTS,
        )
        cut >> composed >> captioned

    @task(trigger_rule=TriggerRule.ALL_DONE, multiple_outputs=True)
    def hero(jobs: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """The hero product's scene and what its upscale and clip need; skipped when it has no scene."""
        ti = context["ti"]
        for index, job in enumerate(jobs):
            if job["hero"]:
                result = ti.xcom_pull(task_ids="product.scene", map_indexes=index) or {}
                if result.get("output_uris"):
                    keys = ("upscale", "upscale_path", "clip", "clip_path")
                    return {"scene": result["output_uris"][0], **{k: job[k] for k in keys}}
                raise AirflowSkipException(f"the hero {job['product_id']!r} has no scene tonight")
        raise AirflowSkipException("the hero product is not part of this run")

    @task(trigger_rule=TriggerRule.ALL_DONE, multiple_outputs=True)
    def candidates(jobs: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """What the reviewer sees: per product a stage strip (uploaded: the UI shows http(s) images only),
        the caption and what failed."""
        from segmind_provider.hooks.segmind import SegmindHook

        hook = SegmindHook(segmind_conn_id=SEGMIND_CONN_ID)
        items = []
        for job, outputs in zip(jobs, _outputs(context["ti"], jobs), strict=True):
            strip = imaging.stage_strip(
                [(publishing.STAGES[s], outputs.data(s)) for s in ("photo", "cutout", "scene")],
                title=job["name"],
            )
            try:
                strip_url: str | None = hook.upload(strip, "image/jpeg")
            except SegmindError as exc:
                log.warning("could not upload the review strip of %s: %s", job["product_id"], exc)
                strip_url = None
            extras = {publishing.STAGES[s]: outputs.urls[s] for s in stages.HERO_STAGES if s in outputs.urls}
            items.append(
                review.candidate(
                    job, strip_url=strip_url, caption=outputs.caption, errors=outputs.errors, extras=extras
                )
            )
        first = jobs[0] if jobs else {}
        body = review.review_body(
            items,
            brand=first.get("brand", ""),
            campaign=first.get("campaign", ""),
            run_date=_run_date(context),  # type: ignore[arg-type]
        )
        return {"body": body, "ready": sum(1 for i in items if i["ready"])}

    @task(outlets=[SEGMIND_MARKETING_ASSETS])
    def publish(jobs: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """Once approved: every stage, the social formats, the manifest and the gallery; tell downstream DAGs."""
        ti = context["ti"]
        run_date = _run_date(context)  # type: ignore[arg-type]
        root = _publish_root(run_date)
        records = [
            publishing.publish_product(
                root, job, outputs.stages, caption=outputs.caption, errors=outputs.errors
            )
            for job, outputs in zip(jobs, _outputs(ti, jobs), strict=True)
        ]
        approval = ti.xcom_pull(task_ids="review") or {}
        manifest = publishing.build_manifest(
            records,
            dag_id=DAG_ID,
            run_id=context["run_id"],
            run_date=run_date,
            campaign=jobs[0].get("campaign", "") if jobs else "",
            brand=jobs[0].get("brand", "") if jobs else "",
            publish_uri=str(root),
            approved_by=(approval.get("responded_by_user") or {}).get("name"),
        )
        manifest_path, gallery_path = publishing.write_manifest_and_gallery(root, manifest)
        summary = {"manifest": str(manifest_path), "gallery": str(gallery_path), **manifest["counts"]}
        context["outlet_events"][SEGMIND_MARKETING_ASSETS].extra = summary
        log.info("published %s", summary)
        return summary

    jobs = plan()
    products = product.expand_kwargs(jobs)
    chosen = hero(jobs)
    products >> chosen  # type: ignore[operator]
    upscaled = SegmindOperator(
        task_id="hero_upscale",
        model=catalog.UPSCALE_MODEL,
        payload=chosen["upscale"],
        input_files={"image": chosen["scene"]},
        output_path=chosen["upscale_path"],
        **STAGE_DEFAULTS,
    )
    clip = SegmindOperator(
        task_id="hero_clip",
        model=catalog.CLIP_MODEL,
        payload=chosen["clip"],
        input_files={"start_image_url": chosen["scene"]},
        output_path=chosen["clip_path"],
        timeout=dt.timedelta(minutes=30),
        **STAGE_DEFAULTS,
    )
    shown = candidates(jobs)
    [products, upscaled, clip] >> shown  # type: ignore[operator]
    approval = NightlyApproval(
        task_id="review",
        subject="Publish the product set of {{ (logical_date or dag_run.run_after) | ds }}?",
        body=shown["body"],
        defaults="Reject",
        response_timeout=REVIEW_WINDOW,
        ignore_downstream_trigger_rules=True,
        # An answer given seconds after the step parked can be lost to Airflow's stale executor event
        # (as in apache/airflow#72716): the retry asks again instead of failing the night's run.
        retries=1,
        retry_delay=dt.timedelta(seconds=10),
    )
    approval >> publish(jobs)


segmind_content_pipeline()
