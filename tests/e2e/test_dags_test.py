"""End to end: `airflow dags test` runs small DAGs against the emulator over real loopback HTTP.

A temporary AIRFLOW_HOME (SQLite, no examples) with the DAGs in ``tests/e2e/dags``; the
emulator runs in this test process (time-scaled) and ``segmind_default`` points at it through
``AIRFLOW_CONN_SEGMIND_DEFAULT``. `airflow dags test` runs each deferred task's trigger in
process and resumes the task with its event, so the whole deferral journey is exercised.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

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
    return migrated_home(home, {"AIRFLOW_CONN_SEGMIND_DEFAULT": emulator.connection_json()})


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


def xcom(env: dict[str, str], dag_id: str, key: str) -> Any:
    """Read one XCom from the temporary metadata database."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        row = db.execute("SELECT value FROM xcom WHERE dag_id = ? AND key = ?", (dag_id, key)).fetchone()
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
