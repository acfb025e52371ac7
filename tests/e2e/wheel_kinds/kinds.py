"""An image, a video and a text model, run by ``tests/e2e/test_wheel_kinds.py`` in a venv holding only
Airflow and the built wheel (no PyAV): production needs no extra for any output kind."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindOperator

OUT = os.environ["KINDS_OUT"]
PHOTO = os.environ["KINDS_PHOTO"]

with DAG("kinds", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    SegmindOperator(
        task_id="image",
        model="flux-1.1-pro",
        payload={"prompt": "a lighthouse", "output_format": "png", "aspect_ratio": "1:1"},
        output_path=f"{OUT}/image",
        deferrable=True,
    )
    SegmindOperator(
        task_id="video",
        model="kling-o1-image-to-video",
        payload={"prompt": "a slow zoom", "duration": 5},
        input_files={"start_image_url": PHOTO},
        output_path=f"{OUT}/video",
        deferrable=True,
    )
    SegmindOperator(
        task_id="text",
        model="llava-v1.6",
        payload={"prompt": "Caption this photo."},
        input_files={"images": PHOTO},
        deferrable=True,
    )
