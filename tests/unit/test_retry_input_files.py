"""A retry of a task with input files never pays twice, though each try uploads its files anew.

Each try uploads the input files and gets a new URL for the same bytes, so the payload sent differs
between tries. A try killed after its submit reached Segmind but before the request id was stored
leaves only the submit's window in the ``task_state_store``; its retry must still recognise the job in
the request history. Through the real operator and hook against the emulator on loopback.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from PIL import Image

from segmind_provider.account.history import same_request, same_sent, sent_digest
from segmind_provider.durable import STATE_STORE_KEY
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger


class Killed(BaseException):
    """The worker dying: nothing after it runs, not even an ``except Exception``."""


class DyingStore(dict):  # type: ignore[type-arg]
    """A task_state_store whose worker is killed as the request id is being stored."""

    def __init__(self, shared: Any) -> None:
        super().__init__()
        self.shared = shared

    def get(self, key: str, default: Any = None) -> Any:
        return self.shared.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if "request_id" in value:
            raise Killed
        self.shared.set(key, value)


def cutout(source: Path) -> SegmindOperator:
    return SegmindOperator(
        task_id="cutout",
        model="bg-removal-v2",
        payload={},
        input_files={"image": str(source)},
        deferrable=True,
        poll_interval=0.2,
        timeout=30,
    )


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_retry_after_a_try_killed_mid_submit_reattaches_despite_a_new_upload_url(
    emulator: SegmindEmulator, make_context: Any, state_store: Any, tmp_path: Path
) -> None:
    """Try 1 uploads, submits, and dies storing the id; try 2 uploads again (another URL) and must
    find try 1's job in the history by the file's content, not pay for a second one."""
    source = tmp_path / "photo.png"
    image = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image, format="PNG")
    source.write_bytes(image.getvalue())
    with pytest.raises(Killed):
        cutout(source).execute(make_context(DyingStore(state_store)))
    (job,) = emulator.requests()
    assert "request_id" not in state_store[STATE_STORE_KEY]
    with pytest.raises(TaskDeferred) as info:
        cutout(source).execute(make_context(state_store, try_number=2))
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger)
    assert len(emulator.calls(endpoint="upload")) == 2  # each try uploaded: two URLs for one file
    assert len(emulator.requests()) == 1, "the retry paid for a second job"
    assert trigger.request_id == job["request_id"]


def test_a_kept_digest_matches_a_row_as_the_payload_itself_would() -> None:
    """The digest equates what the payload comparison equates (``1`` and ``1.0``, a literal body)."""
    sent = {"image": "https://storage/a.png", "scale": 2, "steps": [1, 2.5]}
    row = {
        "model_name": "Clarity-Upscaler",
        "request_body": "{'image': 'https://storage/a.png', 'scale': 2.0, 'steps': [1.0, 2.5]}",
    }
    assert same_request(row, "clarity-upscaler", sent)
    assert same_sent(row, "clarity-upscaler", sent_digest(sent))
    assert not same_sent(row, "clarity-upscaler", sent_digest({**sent, "image": "https://storage/b.png"}))
    assert not same_sent(row, "bg-removal-v2", sent_digest(sent))
