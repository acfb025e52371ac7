"""SegmindReviewOperator through real upstream operators and the emulator's storage (loopback HTTP).

The upstream results are what ``SegmindOperator`` and ``SegmindBatchOperator`` really return (run in
the worker, ``deferrable=False``). The review's ``execute`` runs for real up to where Airflow parks the
task: the human-in-the-loop request it writes (Airflow's ``upsert_hitl_detail``, an Execution API call
that needs a task runner) is recorded instead, and the answer is given to ``execute_complete`` of a
fresh operator, as Airflow resumes it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.standard.operators import hitl

try:  # Airflow 3.3+ parks a human-in-the-loop task in AWAITING_INPUT
    from airflow.sdk.exceptions import TaskAwaitingInput as Parked
except ImportError:  # Airflow 3.2 defers it to the HITL trigger
    from airflow.sdk.exceptions import TaskDeferred as Parked  # type: ignore[assignment]
from PIL import Image
from test_inputs import uploads

from segmind_provider.operators.review import SegmindReviewOperator, markdown_text
from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator

FLUX = "flux-1.1-pro"
SMALL = {"aspect_ratio": "custom", "width": 256, "height": 256, "output_format": "png"}
IMAGE_URL = re.compile(r"!\[[^\]]*\]\((http[^)]+)\)")


def image(make_context: Any, seed: int, output_path: str | None) -> dict[str, Any]:
    op = SegmindOperator(
        task_id=f"image_{seed}",
        model=FLUX,
        payload={"prompt": f"a lighthouse {seed}", "seed": seed, **SMALL},
        output_path=output_path,
        deferrable=False,
        poll_interval=0.2,
        timeout=60,
    )
    return dict(op.execute(make_context()))


def batch(make_context: Any, output_dir: Path, keys: list[str]) -> dict[str, Any]:
    op = SegmindBatchOperator(
        task_id="batch",
        model=FLUX,
        payloads={k: {"prompt": f"a poster, {k}", "seed": i, **SMALL} for i, k in enumerate(keys)},
        output_dir=str(output_dir),
        deferrable=False,
        poll_interval=0.2,
        timeout=60,
    )
    return dict(op.execute(make_context()))


class Asked:
    """What the review wrote into Airflow's human-in-the-loop table (``upsert_hitl_detail``'s kwargs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests: list[dict[str, Any]] = []
        monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kw: self.requests.append(kw))


def ask(op: SegmindReviewOperator, make_context: Any, asked: Asked) -> dict[str, Any]:
    """``execute`` up to the point Airflow parks the task; the request it wrote."""
    context = make_context(task_instance=type("TI", (), {"id": "ti-1"})())
    with pytest.raises(Parked):
        op.execute(context)
    return asked.requests[-1]


def answer(
    outputs: Any, make_context: Any, option: str, reject: list[str] | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The reviewer's answer, given to a fresh operator as Airflow resumes the parked task."""
    op = SegmindReviewOperator(task_id="review", outputs=outputs)
    event = {
        "chosen_options": [option],
        "params_input": {"reject": reject, "reason": reason},
        "responded_at": dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc),
        "responded_by_user": {"id": "ana", "name": "Ana"},
    }
    return dict(op.execute_complete(make_context(), event))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Asked:
    return Asked(monkeypatch)


def test_a_batch_is_shown_as_uploaded_previews_and_a_rejection_passes_on_the_rest(
    emulator: SegmindEmulator, make_context: Any, asked: Asked, tmp_path: Path
) -> None:
    manifest = batch(make_context, tmp_path / "posters", ["red", "green", "blue"])
    before = len(uploads(emulator))
    request = ask(SegmindReviewOperator(task_id="review", outputs=manifest), make_context, asked)

    # One preview per image, uploaded to Segmind storage, small, and the Markdown shows each by its URL.
    previews = uploads(emulator)[before:]
    shown = IMAGE_URL.findall(request["body"])
    assert shown == [p["url"] for p in previews] and len(shown) == 3
    assert all(p["content_type"] == "image/jpeg" for p in previews)
    with Image.open(io.BytesIO(fetch(shown[0]))) as preview:
        assert max(preview.size) <= 512
    assert [line for line in request["body"].splitlines() if line.startswith("### ")] == [
        "### red",
        "### green",
        "### blue",
    ]
    # The form: two answers, a multi-select of the keys, a reason.
    assert request["options"] == ["Approve all", "Reject selected"] and request["multiple"] is False
    assert request["params"]["reject"]["schema"]["examples"] == ["red", "green", "blue"]
    assert set(request["params"]) == {"reject", "reason"}

    result = answer(manifest, make_context, "Reject selected", ["green"], "off-brand colour")
    assert result["rejected"] == {"green": "off-brand colour"}
    assert result["approved_keys"] == ["red", "blue"] and result["reviewed_by"] == "Ana"
    approved = result["approved"]  # still a manifest: what a task reading the batch's result reads
    assert approved["order"] == ["red", "blue"] and set(approved["items"]) == {"red", "blue"}
    assert approved["items"]["red"] == manifest["items"]["red"] and approved["completed"] == 2


def test_approve_all_passes_on_every_result_of_a_mapped_task_in_its_shape(
    emulator: SegmindEmulator, make_context: Any, asked: Asked, tmp_path: Path
) -> None:
    results = [image(make_context, seed, str(tmp_path / f"image-{seed}.png")) for seed in (1, 2)]
    request = ask(SegmindReviewOperator(task_id="review", outputs=results), make_context, asked)
    assert len(IMAGE_URL.findall(request["body"])) == 2
    assert request["params"]["reject"]["schema"]["examples"] == ["0", "1"]

    result = answer(results, make_context, "Approve all", ["1"], "ignored")
    assert result["approved"] == results and result["rejected"] == {}
    assert result["decision"] == "Approve all" and result["approved_keys"] == ["0", "1"]


def test_named_outputs_an_unstored_url_and_a_failed_item(
    emulator: SegmindEmulator, make_context: Any, asked: Asked, tmp_path: Path
) -> None:
    """Several tasks by name: a result only returned as a URL (fetched, key-less, then previewed), and a
    batch item that failed (shown as not reviewable, passed on as rejected with its reason)."""
    unstored = image(make_context, 3, None)
    manifest = batch(make_context, tmp_path / "posters", ["a", "b"])
    manifest["items"]["b"] = {**manifest["items"]["b"], "status": "FAILED", "error": "Content moderation: x"}
    outputs = {"hero": unstored, "posters": manifest}
    request = ask(SegmindReviewOperator(task_id="review", outputs=outputs), make_context, asked)
    assert len(IMAGE_URL.findall(request["body"])) == 2
    assert "### posters/b: not reviewable" in request["body"]
    assert request["params"]["reject"]["schema"]["examples"] == ["hero", "posters/a"]

    result = answer(outputs, make_context, "Reject selected", ["hero"], None)
    assert result["rejected"] == {
        "hero": SegmindReviewOperator.NO_REASON,
        "posters/b": "not reviewed: FAILED: Content moderation: x",
    }
    assert set(result["approved"]) == {"posters"} and result["approved"]["posters"]["order"] == ["a"]


def test_an_answer_naming_an_unknown_item_fails(make_context: Any, tmp_path: Path) -> None:
    result = {"request_id": "r", "model": FLUX, "status": "COMPLETED", "output_uris": ["/x.png"]}
    with pytest.raises(ValueError, match=r"does not have: \['7'\]"):
        answer([result], make_context, "Reject selected", ["7"], "no")


@pytest.mark.parametrize("outputs", ["s3://bucket/a.png", 42, [{"no": "result"}]])
def test_outputs_of_another_shape_are_refused_by_name_before_any_upload(
    emulator: SegmindEmulator, make_context: Any, asked: Asked, outputs: Any
) -> None:
    op = SegmindReviewOperator(task_id="review", outputs=outputs)
    with pytest.raises(TypeError, match="expected a SegmindOperator result, a SegmindBatchOperator manifest"):
        op.execute(make_context(task_instance=type("TI", (), {"id": "ti-1"})()))
    assert uploads(emulator) == [] and asked.requests == []


def test_fixed_arguments_and_unusable_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="sets 'options' itself"):
        SegmindReviewOperator(task_id="review", outputs=[], options=["Yes"])
    with pytest.raises(ValueError, match="preview_side must be at least 16 pixels"):
        SegmindReviewOperator(task_id="review", outputs=[], preview_side=0)


def test_templated_fields() -> None:
    assert {"outputs", "subject", "body", "segmind_conn_id", "output_conn_id"} <= set(
        SegmindReviewOperator.template_fields
    )


def test_markdown_text_is_inert() -> None:
    assert markdown_text("![x](http://evil)  *b*\n") == r"\!\[x\]\(http://evil\) \*b\*"
