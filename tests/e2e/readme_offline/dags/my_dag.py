"""The DAG the README's offline section runs as ``airflow dags test my_dag``: a photo from disk put
in a scene (``input_files``: uploaded to storage), then a batch of three images with its cost."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator

OUT = os.environ.get("SEGMIND_README_OUT", "/tmp/segmind-readme")
PHOTO = os.environ.get("SEGMIND_README_PHOTO", "/tmp/segmind-readme/photo.png")

with DAG("my_dag", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    place = SegmindOperator(
        task_id="place_in_scene",
        model="flux-kontext-pro",
        payload={"prompt": "Place this bottle on a mossy rock in a forest", "output_format": "png"},
        input_files={"input_image": PHOTO},
        output_path=f"{OUT}/scene",
        deferrable=True,
    )
    campaign = SegmindBatchOperator(
        task_id="campaign",
        model="flux-1.1-pro",
        payloads=[
            {"prompt": f"studio shot of bottle {i}", "seed": i, "output_format": "png"} for i in range(3)
        ],
        output_dir=f"{OUT}/campaign",
        deferrable=True,
    )
    place >> campaign
