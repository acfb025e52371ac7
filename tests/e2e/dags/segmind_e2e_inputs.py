"""E2E: input files into every catalog model, from a local path and from an ObjectStoragePath.

``stage`` copies the label photo into ``memory://`` (``airflow dags test`` runs every task in one
process, so the in-memory filesystem is shared); the other tasks hand files to the six catalog
models through ``input_files``: URL fields get Segmind storage uploads, clarity-upscaler's base64
field gets the bytes inline.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

from segmind_provider.operators.segmind import SegmindOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e")
PHOTO = os.environ.get("SEGMIND_E2E_PHOTO", "/tmp/segmind-e2e/photo.png")
LABEL = os.environ.get("SEGMIND_E2E_LABEL", "/tmp/segmind-e2e/label.png")
BUCKET_LABEL = "memory://segmind-e2e-inputs/label.png"

#: task id -> (model, payload, input_files, output file name or None for a text answer)
JOBS: dict[str, tuple[str, dict[str, object], dict[str, object], str | None]] = {
    "prompt_local": (
        "flux-1.1-pro",
        {"prompt": "a glass bottle on moss", "output_format": "png", "seed": 3},
        {"image_prompt": PHOTO},
        "prompt_local.png",
    ),
    "prompt_bucket": (
        "flux-1.1-pro",
        {"prompt": "a glass bottle on moss", "output_format": "png", "seed": 3},
        {"image_prompt": BUCKET_LABEL},
        "prompt_bucket.png",
    ),
    "edit_local": (
        "flux-kontext-pro",
        {"prompt": "place it on a marble counter", "output_format": "png"},
        {"input_image": PHOTO},
        "edit_local.png",
    ),
    "edit_bucket": (
        "flux-kontext-pro",
        {"prompt": "place it on a marble counter", "output_format": "jpg"},
        {"input_image": BUCKET_LABEL},
        "edit_bucket.jpg",
    ),
    "cutout": ("bg-removal-v2", {}, {"image": PHOTO}, "cutout"),
    "upscale": (
        "clarity-upscaler",
        {"scale_factor": 2, "output_format": "png"},
        {"image": PHOTO},
        "upscale.png",
    ),
    "clip": (
        "kling-o1-image-to-video",
        {"prompt": "the bottle turns slowly", "duration": 5},
        {"start_image_url": PHOTO, "end_image_url": BUCKET_LABEL},
        "clip.mp4",
    ),
    "caption": (
        "llava-v1.6",
        {"prompt": "Write a one-line caption for this product."},
        {"images": PHOTO},
        None,
    ),
}

with DAG(
    dag_id="segmind_e2e_inputs",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["segmind", "e2e"],
):

    @task
    def stage() -> str:
        """Put the label photo in object storage, where the bucket tasks read it."""
        target = ObjectStoragePath(BUCKET_LABEL)
        with open(LABEL, "rb") as source:
            target.write_bytes(source.read())
        return str(target)

    staged = stage()
    for task_id, (model, payload, files, name) in JOBS.items():
        staged >> SegmindOperator(
            task_id=task_id,
            model=model,
            payload=payload,
            input_files=files,
            output_path=f"{OUT}/inputs/{name}" if name else None,
            deferrable=True,
            poll_interval=1.0,
            timeout=120,
        )
