"""End to end: every output kind stored and verified under `airflow dags test`, through both operators.

One `dags test` run of ``segmind_e2e_media``: an audio, a video, a text and an LLM model each through
``SegmindOperator`` and ``SegmindBatchOperator``, and one directory model per category drawn at random
here (seeded: a failure replays), each deferred, waited for on its directory latency (the emulator's
own time scale, which the connection carries) and stored. Every stored file is read back by its own
decoder (PyAV for audio and video, Pillow for images, the glTF header for 3D), every text file as UTF-8.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from dags_runner import dags_test, xcom
from PIL import Image

from segmind_provider.catalog import directory_models, estimate_cost, get_model, output_kind
from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = pytest.mark.e2e

DAG_ID = "segmind_e2e_media"
#: The longest directory model (~780 s) takes ~1.6 s here.
SCALE = 0.002
SEED = 19
#: task kind -> (model, its batch's item keys), as the DAG file has them
KINDS = {
    "audio": ("tts-eleven-labs", ["intro", "outro"]),
    "video": ("veo-3-fast", ["dawn", "dusk"]),
    "text": ("eleven-labs-transcript", ["talk", "call"]),
    "llm": ("claude-4-sonnet", ["caption", "slogan"]),
}


def sample_per_category(seed: int) -> list[str]:
    """One directory-only model per category, drawn at random (seeded)."""
    rng = random.Random(seed)
    by_category: dict[str, list[str]] = {}
    for model in directory_models():
        if get_model(model.slug) is None and not model.retired:
            by_category.setdefault(model.category, []).append(model.slug)
    return [rng.choice(slugs) for _, slugs in sorted(by_category.items())]


@pytest.fixture(scope="module")
def fast_emulator() -> Iterator[SegmindEmulator]:
    """Its own emulator, faster than the session's: the directory's slowest models in a second or two."""
    with SegmindEmulator(time_scale=SCALE) as emu:
        yield emu


def check_file(kind: str, path: Path) -> None:
    """The stored file is whole and of ``kind``, read by its own decoder."""
    if kind in ("audio", "video"):
        with av.open(str(path)) as container:
            streams = container.streams.audio if kind == "audio" else container.streams.video
            assert streams, (kind, path)
            assert next(container.decode(streams[0])) is not None
    elif kind == "image":
        with Image.open(path) as image:
            image.load()
    elif kind == "3d":
        data = path.read_bytes()
        assert data[:4] == b"glTF" and int.from_bytes(data[8:12], "little") == len(data)
    else:
        path.read_text(encoding="utf-8")


def check_result(kind: str, result: dict[str, Any]) -> None:
    """A result's stored files are of ``kind``; a text or JSON answer in the result (a batch with an output
    folder leaves it on disk) is its file's content."""
    assert result["status"] == "COMPLETED" and result["output_uris"], result
    for uri in result["output_uris"]:
        path = Path(str(uri).removeprefix("file://"))
        check_file(kind, path)
        if kind == "text" and "output" in result:
            text = (result.get("chat") or {}).get("text") or result["output"]
            assert path.read_text(encoding="utf-8") == text
        elif kind == "json" and "output" in result:
            assert json.loads(path.read_text(encoding="utf-8")) == result["output"]


def test_every_output_kind_runs_through_both_operators_and_is_stored_verified(
    airflow_env: dict[str, str], fast_emulator: SegmindEmulator, tmp_path: Path
) -> None:
    sample = sample_per_category(SEED)
    assert {output_kind(slug) for slug in sample} == {"image", "video", "audio", "text", "json", "3d"}
    env = {
        **airflow_env,
        "AIRFLOW_CONN_SEGMIND_DEFAULT": fast_emulator.connection_json(),
        "SEGMIND_E2E_OUTPUT": str(tmp_path),
        "SEGMIND_E2E_MEDIA_SAMPLE": ",".join(sample),
    }
    output = dags_test(DAG_ID, env)
    assert output.count("has no full catalog entry") >= len(sample)  # said once per directory-only task

    for kind, (model, keys) in KINDS.items():
        stored = "text" if kind == "llm" else kind
        single = xcom(env, DAG_ID, "return_value", task_id=f"single_{kind}")
        assert single["model"] == model and single["cost"] == estimate_cost(model)
        check_result(stored, single)
        batch = xcom(env, DAG_ID, "return_value", task_id=f"batch_{kind}")
        assert sorted(batch["items"]) == sorted(keys)
        assert batch["cost"] == pytest.approx(2 * (estimate_cost(model) or 0))
        manifest = json.loads((tmp_path / "media" / "batch" / kind / "manifest.json").read_text())
        for key in keys:
            item = batch["items"][key]
            assert item["status"] == "COMPLETED" and manifest["items"][key]["status"] == "COMPLETED"
            check_result(stored, {**item, "model": model})
    llm = xcom(env, DAG_ID, "return_value", task_id="single_llm")
    assert llm["chat"]["vendor"] == "anthropic" and "lighthouse" in llm["chat"]["text"]
    assert llm["chat"]["usage"]["total_tokens"] > 0
    # The batch's LLM items are stored as the assistant's text, not the vendor's JSON.
    answers = sorted(
        p.read_text(encoding="utf-8") for p in (tmp_path / "media" / "batch" / "llm").glob("*.txt")
    )
    assert answers == [
        "Emulated claude-4-sonnet reply to: Write a caption for a lighthouse",
        "Emulated claude-4-sonnet reply to: Write a slogan for a lamp",
    ]

    for slug in sample:
        kind = str(output_kind(slug))
        result = xcom(env, DAG_ID, "return_value", task_id=f"sample_{slug}".replace(".", "_"))
        assert result["model"] == slug and result["cost"] == estimate_cost(slug)
        check_result(kind, result)
    requests = fast_emulator.requests()  # each paid for once
    assert len(requests) == len(sample) + 3 * len(KINDS) and all(r["status"] == "COMPLETED" for r in requests)
