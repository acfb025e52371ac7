"""The ``flux-1.1-pro`` model page's own example, as a DAG.

Same model, prompt, seed and parameters as Segmind's sample code; the image lands in
``<output dir>/quickstart/astronaut-<date>.png`` where the output dir is the Airflow Variable
``segmind_output_dir``, else ``$SEGMIND_OUTPUT_DIR``, else ``$AIRFLOW_HOME/segmind-output``.
Needs a ``segmind_default`` connection (password = API key) or ``SEGMIND_API_KEY`` in the environment.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG
from segmind_pipeline import settings

from segmind_provider.operators.segmind import SegmindOperator

ASTRONAUT_PROMPT = (
    "A photo of an astronaut with a mirrored helmet standing in a field of sunflowers. "
    "The spacesuit has a NASA logo on it. The astronaut is covered in dirt and has vines wrapped "
    "around his body. The sky is dark and cloudy."
)


with DAG(
    dag_id="segmind_quickstart",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["segmind", "example"],
    user_defined_macros={"segmind_output_root": settings.segmind_output_root},
    doc_md=__doc__,
):
    SegmindOperator(
        task_id="astronaut",
        model="flux-1.1-pro",
        payload={
            "prompt": ASTRONAUT_PROMPT,
            "seed": 12345,
            "width": 1024,
            "height": 1024,
            "aspect_ratio": "1:1",
            "output_format": "png",
            "output_quality": 80,
            "safety_tolerance": 2,
            "prompt_upsampling": False,
        },
        output_path="{{ segmind_output_root() }}/quickstart/astronaut-{{ (logical_date or dag_run.run_after) | ds }}.png",
    )
