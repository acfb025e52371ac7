"""The built wheel, installed beside apache-airflow alone in a clean venv, imports every module.

So every package the code imports is declared (or comes with Airflow), and nothing only the
test extras bring is needed at run time. About a minute here (pip's cache warm).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

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


def test_a_clean_venv_with_airflow_and_the_wheel_imports_every_module(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("airflow_provider_segmind-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"apache-airflow=={_airflow_version()}", str(wheel)],
        check=True,
    )
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
