"""End to end: `airflow dags test` runs small DAGs against the emulator over real loopback HTTP.

A temporary AIRFLOW_HOME (SQLite, no examples) with the DAGs in ``tests/e2e/dags``; the
emulator runs in this test process (time-scaled) and ``segmind_default`` points at it through
``AIRFLOW_CONN_SEGMIND_DEFAULT``. `airflow dags test` runs each deferred task's trigger in
process and resumes the task with its event, so the whole deferral journey is exercised.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageDraw

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).parent / "dags"
TIME_SCALE = 0.05  # flux-1.1-pro "takes" ~0.7 s
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def emulator() -> Iterator[SegmindEmulator]:
    with SegmindEmulator(time_scale=TIME_SCALE) as emu:
        yield emu


def migrated_home(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A fresh AIRFLOW_HOME (SQLite, no examples, the e2e DAGs), migrated; its environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "SEGMIND_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "SEGMIND_E2E_OUTPUT": str(home / "out"),
            "SEGMIND_E2E_EXPECTED_DURATION": str(14.0 * TIME_SCALE),
            **extra,
        }
    )
    airflow(env, "db", "migrate")
    return env


def airflow(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, emulator: SegmindEmulator) -> dict[str, str]:
    """The connection comes from ``AIRFLOW_CONN_SEGMIND_DEFAULT`` (both lookups find those)."""
    home = tmp_path_factory.mktemp("airflow_home")
    return migrated_home(
        home,
        {
            "AIRFLOW_CONN_SEGMIND_DEFAULT": emulator.connection_json(),
            "SEGMIND_E2E_PHOTO": str(home / "photo.png"),
            "SEGMIND_E2E_LABEL": str(home / "label.png"),
        },
    )


def dags_test(dag_id: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


def test_single_image_defers_resumes_and_is_stored(
    airflow_env: dict[str, str], emulator: SegmindEmulator
) -> None:
    emulator.clear_calls()
    output = dags_test("segmind_e2e_single", airflow_env)
    assert "Submitted Segmind request" in output  # worker: submit
    assert "deferred" in output.lower()  # the task handed its wait to the trigger
    assert ": success after" in output  # trigger: the wait ended
    assert "completed (inference" in output  # execute_complete resumed the task
    assert "XCom not found" not in output  # the extra link did not look for a result too early
    endpoints = [c["endpoint"] for c in emulator.calls()]
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


def xcom(env: dict[str, str], dag_id: str, key: str, task_id: str = "generate") -> Any:
    """Read one XCom from the temporary metadata database."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND key = ? AND task_id = ?", (dag_id, key, task_id)
        ).fetchone()
    assert row is not None, f"no XCom {key!r}"
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def test_mapped_over_five_prompts(airflow_env: dict[str, str], emulator: SegmindEmulator) -> None:
    emulator.clear_calls()
    dags_test("segmind_e2e_mapped", airflow_env)
    endpoints = [c["endpoint"] for c in emulator.calls()]
    assert endpoints.count("submit") == 5 and endpoints.count("result") == 5
    out = Path(airflow_env["SEGMIND_E2E_OUTPUT"]) / "mapped"
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"image-{i}.jpg" for i in range(5)]
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "JPEG" and abs(image.width / image.height - 4 / 3) < 0.02


def test_a_connection_stored_in_the_metadata_database_reaches_the_trigger(
    tmp_path: Path, emulator: SegmindEmulator
) -> None:
    """Issue 10, defect 1: a connection made with ``airflow connections add`` (as the UI does) lives
    in the metadata database, where ``BaseHook.aget_connection`` under ``airflow dags test`` does not
    find it. The worker's blocking lookup is shared with the trigger for the settings' lifetime
    (60 s), so the job here runs longer than that: the trigger's polls after it must look the
    connection up themselves. Without the fallback to the blocking lookup the task failed with "no
    Segmind API key" after its job was paid for."""
    slow = 5.0  # flux-1.1-pro "takes" ~70 s: past the 60 s the worker's lookup is shared
    emulator.configure(time_scale=slow)
    try:
        env = migrated_home(tmp_path / "home", {"SEGMIND_E2E_EXPECTED_DURATION": str(14.0 * slow)})
        airflow(env, "connections", "add", "segmind_default", "--conn-json", emulator.connection_json())
        with sqlite3.connect(tmp_path / "home" / "airflow.db") as db:
            stored = db.execute(
                "SELECT conn_type FROM connection WHERE conn_id = 'segmind_default'"
            ).fetchall()
        assert stored == [("segmind",)] and not any(k.startswith("AIRFLOW_CONN_") for k in env)
        emulator.clear_calls()
        output = dags_test("segmind_e2e_single", env)
    finally:
        emulator.configure(time_scale=TIME_SCALE)
    assert "no Segmind API key" not in output
    assert "completed (inference" in output  # the trigger kept its key and the task resumed
    calls = emulator.calls()
    endpoints = [c["endpoint"] for c in calls]
    assert endpoints.count("submit") == 1 and endpoints.count("result") == 1
    submitted = next(c["time"] for c in calls if c["endpoint"] == "submit")
    late = [c for c in calls if c["endpoint"] == "status" and c["time"] - submitted > 60]
    assert late, "no poll came after the worker's lookup expired: the trigger's own lookup was not tested"
    with Image.open(tmp_path / "home" / "out" / "single" / "hero.png") as image:
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
    airflow_env: dict[str, str], emulator: SegmindEmulator
) -> None:
    """A local file and a memory:// ObjectStoragePath go into flux-1.1-pro's image_prompt and
    flux-kontext-pro's input_image (and the other catalog models' file fields): one upload per
    distinct file per task, the stored URL in the submitted payload, the key never at the media address."""
    photo = product_shot(Path(airflow_env["SEGMIND_E2E_PHOTO"]), (40, 110, 90), (320, 400))
    label = product_shot(Path(airflow_env["SEGMIND_E2E_LABEL"]), (190, 70, 40), (300, 300))
    emulator.clear_calls()
    first_request = len(emulator.requests())
    dags_test("segmind_e2e_inputs", airflow_env)

    uploads = [f for call in emulator.calls(endpoint="upload") for f in call["files"]]
    digest_of = {f["url"]: f["sha256"] for f in uploads}
    bodies = {r["model"] + ":" + str(i): r["body"] for i, r in enumerate(emulator.requests()[first_request:])}
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
    calls = emulator.calls()
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
