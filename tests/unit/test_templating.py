"""Issue 20, item 11: the model and every connection id are templated on both operators."""

from __future__ import annotations

from typing import Any

from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator

CONTEXT = {"params": {"model": "flux-1.1-pro", "env": "staging"}}


def rendered(op: Any) -> Any:
    op.render_template_fields(CONTEXT)
    return op


def test_the_single_operator_renders_model_and_connection_ids() -> None:
    op = rendered(
        SegmindOperator(
            task_id="generate",
            model="{{ params.model }}",
            payload={"prompt": "a lighthouse"},
            segmind_conn_id="segmind_{{ params.env }}",
            output_conn_id="out_{{ params.env }}",
            input_conn_id="in_{{ params.env }}",
        )
    )
    assert (op.model, op.segmind_conn_id, op.output_conn_id, op.input_conn_id) == (
        "flux-1.1-pro",
        "segmind_staging",
        "out_staging",
        "in_staging",
    )
    assert op.hook.segmind_conn_id == "segmind_staging"  # the hook is made after rendering


def test_the_batch_operator_renders_model_and_connection_ids() -> None:
    op = rendered(
        SegmindBatchOperator(
            task_id="campaign",
            model="{{ params.model }}",
            payloads=[{"prompt": "a lighthouse"}],
            segmind_conn_id="segmind_{{ params.env }}",
            output_conn_id="out_{{ params.env }}",
        )
    )
    assert (op.model, op.segmind_conn_id, op.output_conn_id) == (
        "flux-1.1-pro",
        "segmind_staging",
        "out_staging",
    )
    assert op.hook.segmind_conn_id == "segmind_staging"
