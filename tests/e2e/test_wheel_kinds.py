"""Issue 20, defect 4: a venv with only apache-airflow and the built wheel (no extra, so no PyAV)
runs a DAG for an image, a video and a text model, each stored or returned and checked.

The emulator serves them from this test's own environment (it needs PyAV to *make* the video);
the provider in the bare venv only checks the video's header and size. About two minutes here
(pip's cache warm).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PIL import Image

from segmind_provider.testing.emulator.runner import SegmindEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def bare_venv(tmp_path: Path) -> Path:
    """A venv with the wheel and the Airflow this suite runs, nothing else; its bin folder."""
    from importlib.metadata import version

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("airflow_provider_segmind-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"apache-airflow=={version('apache-airflow')}",
            str(wheel),
        ],
        check=True,
    )
    return bin_dir


def test_image_video_and_text_models_need_no_extra(tmp_path: Path) -> None:
    bin_dir = bare_venv(tmp_path)
    has_av = subprocess.run([str(bin_dir / "python"), "-c", "import av"], capture_output=True, check=False)
    assert has_av.returncode != 0  # PyAV is not there
    Image.new("RGB", (320, 480), "coral").save(tmp_path / "photo.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SEGMIND_", "PYTHON"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).parent / "wheel_kinds"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "KINDS_OUT": str(tmp_path / "out"),
            "KINDS_PHOTO": str(tmp_path / "photo.png"),
        }
    )
    airflow = str(bin_dir / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, timeout=300, check=True)
    with SegmindEmulator(time_scale=0.01) as emu:
        env["AIRFLOW_CONN_SEGMIND_DEFAULT"] = emu.connection_json()
        done = subprocess.run(
            [airflow, "dags", "test", "kinds"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        submits = [c["status"] for c in emu.calls(endpoint="submit")]
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert submits == [200, 200, 200]
    out = tmp_path / "out"
    with Image.open(out / "image.png") as image:
        assert image.format == "PNG"
    assert (out / "video.mp4").read_bytes()[4:8] == b"ftyp"
    with sqlite3.connect(tmp_path / "home" / "airflow.db") as db:
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = 'kinds' AND task_id = 'text' AND key = 'return_value'"
        ).fetchone()
    caption = json.loads(value) if isinstance(value, (str, bytes)) else value
    assert isinstance(caption["output"], str) and caption["output"].strip()
