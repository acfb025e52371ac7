"""E2E: every output kind through both operators, waiting on the schedule the catalog implies.

An audio (text-to-speech), a video (text-to-video), a text (transcription) and an LLM model each run
as one ``SegmindOperator`` and one two-item ``SegmindBatchOperator``; ``SEGMIND_E2E_MEDIA_SAMPLE``
(comma-separated slugs, drawn by the test) adds one ``SegmindOperator`` per sampled directory model.
No task sets ``expected_duration``: each waits on its model's own latency, scaled by the connection's
``time_scale``. Every output is stored under ``{SEGMIND_E2E_OUTPUT}/media``.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG

from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator

OUT = os.environ.get("SEGMIND_E2E_OUTPUT", "/tmp/segmind-e2e") + "/media"
SAMPLE = [slug for slug in os.environ.get("SEGMIND_E2E_MEDIA_SAMPLE", "").split(",") if slug]


def chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


#: kind -> (model, two payloads keyed by item)
KINDS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "audio": (
        "tts-eleven-labs",
        {"intro": {"prompt": "Welcome to the spring catalog."}, "outro": {"prompt": "Thanks for watching."}},
    ),
    "video": (
        "veo-3-fast",
        {"dawn": {"prompt": "a lighthouse at dawn"}, "dusk": {"prompt": "a lighthouse at dusk"}},
    ),
    "text": (
        "eleven-labs-transcript",
        {
            "talk": {"audio_url": "https://example.com/talk.mp3", "prompt": "a product talk"},
            "call": {"audio_url": "https://example.com/call.mp3", "prompt": "a support call"},
        },
    ),
    "llm": (
        "claude-4-sonnet",
        {"caption": chat("Write a caption for a lighthouse"), "slogan": chat("Write a slogan for a lamp")},
    ),
}

with DAG(
    dag_id="segmind_e2e_media",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["segmind", "e2e"],
):
    for kind, (model, payloads) in KINDS.items():
        first = next(iter(payloads))
        SegmindOperator(
            task_id=f"single_{kind}",
            model=model,
            payload=payloads[first],
            output_path=f"{OUT}/single/{kind}",
            deferrable=True,
            credit_floor=0.0,
        )
        SegmindBatchOperator(
            task_id=f"batch_{kind}",
            model=model,
            payloads=payloads,
            output_dir=f"{OUT}/batch/{kind}",
            deferrable=True,
            credit_floor=0.0,
        )
    for slug in SAMPLE:
        SegmindOperator(
            task_id=f"sample_{slug}".replace(".", "_"),
            model=slug,
            payload={"prompt": f"a lighthouse ({slug})", **chat("Write a caption for a lighthouse")},
            output_path=f"{OUT}/sample/{slug}",
            deferrable=True,
            credit_floor=0.0,
        )
