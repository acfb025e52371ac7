"""End to end: `airflow dags test` runs small DAGs against the emulator over real loopback HTTP.

A temporary AIRFLOW_HOME (SQLite, no examples) with the DAGs in ``tests/e2e/dags``; the
emulator runs in this test process (time-scaled) and ``segmind_default`` points at it through
``AIRFLOW_CONN_SEGMIND_DEFAULT`` (the session fixtures ``dags_emulator`` and ``airflow_env``, shared
with test_batch_dags.py). `airflow dags test` runs each deferred task's trigger in
process and resumes the task with its event, so the whole deferral journey is exercised.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path

import av
import pytest
from dags_runner import TIME_SCALE, airflow, dags_test, xcom
from PIL import Image, ImageDraw

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = pytest.mark.e2e


def test_single_image_defers_resumes_and_is_stored(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    dags_emulator.clear_calls()
    output = dags_test("segmind_e2e_single", airflow_env)
    assert "Submitted Segmind request" in output  # worker: submit
    assert "deferred" in output.lower()  # the task handed its wait to the trigger
    assert ": success after" in output  # trigger: the wait ended
    assert "completed (inference" in output  # execute_complete resumed the task
    assert "XCom not found" not in output  # the extra link did not look for a result too early
    endpoints = [c["endpoint"] for c in dags_emulator.calls()]
    assert endpoints.count("submit") == 1 and endpoints.count("result") == 1
    assert endpoints.count("status") >= 1 and endpoints.count("media") == 1
    image_path = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "single" / "hero.png"
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.size == (640, 384)
    link = xcom(airflow_env, "segmind_e2e_single", "_link_SegmindOutputLink")
    # A local file is not reachable over http: the link opens the model's page, never the output
    # URL Segmind returned (it expires after an hour).
    assert link == "https://www.segmind.com/models/flux-1.1-pro/api"
    assert xcom(airflow_env, "segmind_e2e_single", "request_id")


def test_mapped_over_five_prompts(airflow_env: dict[str, str], dags_emulator: SegmindEmulator) -> None:
    dags_emulator.clear_calls()
    dags_test("segmind_e2e_mapped", airflow_env)
    endpoints = [c["endpoint"] for c in dags_emulator.calls()]
    assert endpoints.count("submit") == 5 and endpoints.count("result") == 5
    out = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "mapped"
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"image-{i}.jpg" for i in range(5)]
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "JPEG" and abs(image.width / image.height - 4 / 3) < 0.02


def test_a_connection_stored_in_the_metadata_database_reaches_the_trigger(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    """Issue 10, defect 1: a connection made with ``airflow connections add`` (as the UI does) lives
    in the metadata database, where ``BaseHook.aget_connection`` under ``airflow dags test`` does not
    find it. The worker's blocking lookup is shared with the trigger for the settings' lifetime
    (60 s; the DAG file sets it to ``ttl`` here, so the job need not take a minute), so the job runs
    longer than that: the trigger's polls after it must look the connection up themselves. Without
    the fallback to the blocking lookup the task failed with "no Segmind API key" after its job was
    paid for. The session's home, without its ``AIRFLOW_CONN_SEGMIND_DEFAULT``."""
    ttl, slow = 4.0, 1.0  # flux-1.1-pro "takes" ~14 s: well past the 4 s the worker's lookup is shared
    env = {k: v for k, v in airflow_env.items() if not k.startswith("AIRFLOW_CONN_")}
    env |= {"SEGMIND_E2E_EXPECTED_DURATION": str(14.0 * slow), "SEGMIND_E2E_SETTINGS_TTL": str(ttl)}
    airflow(env, "connections", "add", "segmind_default", "--conn-json", dags_emulator.connection_json())
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        stored = db.execute("SELECT conn_type FROM connection WHERE conn_id = 'segmind_default'").fetchall()
    assert stored == [("segmind",)] and not any(k.startswith("AIRFLOW_CONN_") for k in env)
    hero = Path(env["SEGMIND_E2E_OUTPUT"]) / "single" / "hero.png"
    hero.unlink(missing_ok=True)
    dags_emulator.configure(time_scale=slow)
    try:
        dags_emulator.clear_calls()
        output = dags_test("segmind_e2e_single", env)
    finally:
        dags_emulator.configure(time_scale=TIME_SCALE)
    assert "no Segmind API key" not in output
    assert "completed (inference" in output  # the trigger kept its key and the task resumed
    calls = dags_emulator.calls()
    endpoints = [c["endpoint"] for c in calls]
    assert endpoints.count("submit") == 1 and endpoints.count("result") == 1
    submitted = next(c["time"] for c in calls if c["endpoint"] == "submit")
    late = [c for c in calls if c["endpoint"] == "status" and c["time"] - submitted > ttl]
    assert late, "no poll came after the worker's lookup expired: the trigger's own lookup was not tested"
    with Image.open(hero) as image:
        assert image.format == "PNG"


def product_shot(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> str:
    """A small studio-style product photo (a bottle on a light backdrop); returns its sha256."""
    image = Image.new("RGB", size, (238, 236, 230))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rounded_rectangle((w * 0.38, h * 0.3, w * 0.62, h * 0.85), radius=w // 20, fill=colour)
    draw.rectangle((w * 0.45, h * 0.15, w * 0.55, h * 0.3), fill=(60, 60, 60))
    image.save(path, "PNG")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_input_files_reach_every_catalog_model(
    airflow_env: dict[str, str], dags_emulator: SegmindEmulator
) -> None:
    """A local file and a memory:// ObjectStoragePath go into flux-1.1-pro's image_prompt and
    flux-kontext-pro's input_image (and the other catalog models' file fields): one upload per
    distinct file per task, the stored URL in the submitted payload, the key never at the media address."""
    photo = product_shot(Path(airflow_env["SEGMIND_E2E_PHOTO"]), (40, 110, 90), (320, 400))
    label = product_shot(Path(airflow_env["SEGMIND_E2E_LABEL"]), (190, 70, 40), (300, 300))
    dags_emulator.clear_calls()
    first_request = len(dags_emulator.requests())
    dags_test("segmind_e2e_inputs", airflow_env)

    uploads = [f for call in dags_emulator.calls(endpoint="upload") for f in call["files"]]
    digest_of = {f["url"]: f["sha256"] for f in uploads}
    bodies = {
        r["model"] + ":" + str(i): r["body"] for i, r in enumerate(dags_emulator.requests()[first_request:])
    }
    # Which file each URL field received, by content (the body carries the storage URL).
    sent = sorted(
        (key.split(":")[0], field, digest_of[value])
        for key, body in bodies.items()
        for field, value in body.items()
        if isinstance(value, str) and value in digest_of
    )
    assert sent == sorted(
        [
            ("flux-1.1-pro", "image_prompt", photo),
            ("flux-1.1-pro", "image_prompt", label),
            ("flux-kontext-pro", "input_image", photo),
            ("flux-kontext-pro", "input_image", label),
            ("bg-removal-v2", "image", photo),
            ("kling-o1-image-to-video", "start_image_url", photo),
            ("kling-o1-image-to-video", "end_image_url", label),
            ("llava-v1.6", "images", photo),
        ]
    )
    assert (
        len(uploads) == len(sent) == len(digest_of)
    )  # one upload per distinct file per task, each used once
    upscale = next(body for key, body in bodies.items() if key.startswith("clarity-upscaler"))
    assert hashlib.sha256(base64.b64decode(upscale["image"])).hexdigest() == photo  # inline, not uploaded
    # The key reached the API and storage hosts only, never the media address.
    calls = dags_emulator.calls()
    assert {c["endpoint"] for c in calls if c["key_present"]} <= {"submit", "status", "result", "upload"}
    assert [c for c in calls if c["endpoint"] == "media" and c["key_present"]] == []
    assert all(c["path"] == "/storage/upload-asset" for c in calls if c["endpoint"] == "upload")

    out = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "inputs"
    with Image.open(out / "cutout.png") as cutout:
        assert cutout.mode == "RGBA" and cutout.getextrema()[3] == (0, 255)  # background made transparent
    with Image.open(out / "upscale.png") as upscaled:
        assert upscaled.size == (640, 800)
    for name in ("prompt_local.png", "prompt_bucket.png", "edit_local.png", "edit_bucket.jpg"):
        with Image.open(out / name) as image:
            image.load()
    with av.open(str(out / "clip.mp4")) as clip:
        frame = next(clip.decode(video=0))
        assert frame.width > 0 and clip.streams.video[0].codec_context.name == "h264"
    caption = xcom(airflow_env, "segmind_e2e_inputs", "return_value", task_id="caption")
    assert "llava-v1.6" in caption["output"] and "320x400" in caption["output"]
