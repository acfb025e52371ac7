"""The built wheel, installed beside apache-airflow alone in a clean venv, imports every module and
runs an image, a video and a text model (issue 20: no extra is needed for any output kind).

So every package the code imports is declared (or comes with Airflow), and nothing only the
test extras bring is needed at run time. About two minutes here (pip's cache warm).
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

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, pkgutil, sys
import segmind_provider
names = [m.name for m in pkgutil.walk_packages(segmind_provider.__path__, "segmind_provider.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules imported")
"""


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv holding the built wheel and the Airflow this suite runs, nothing else."""
    root = tmp_path_factory.mktemp("bare")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("airflow_provider_segmind-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"apache-airflow=={_airflow_version()}", str(wheel)],
        check=True,
    )
    return python


def test_a_clean_venv_with_airflow_and_the_wheel_imports_every_module(python: Path, tmp_path: Path) -> None:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout.lower()
    assert "pytest" not in listed and "hypothesis" not in listed  # nothing of the test extras
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    done = subprocess.run(
        [str(python), "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count = int(done.stdout.split()[0])
    expected = sum(1 for p in (ROOT / "segmind_provider").rglob("*.py") if p.name != "__init__.py")
    assert count >= expected, done.stdout


def test_the_bare_venv_runs_an_image_a_video_and_a_text_model(python: Path, tmp_path: Path) -> None:
    """Production needs no extra for any output kind: no PyAV here, yet the video is stored and checked
    (the emulator, in this test's own environment, needs PyAV to *make* it)."""
    bin_dir = python.parent
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
