"""Issue 20, defect 1 (done when): the README's offline section, run verbatim, is really offline.

The ``bash`` block of README's "Test your own DAGs offline" section (the emulator on port 8765, the
connection, ``airflow dags test my_dag``) runs as written in a private network namespace (loopback
only, so port 8765 is free and nothing could leave anyway) behind a loopback proxy that records and
refuses every request, with a socket guard in every Python process that records and refuses any
name lookup or connection off loopback (it catches clients that ignore the proxy variables). Both
catchers are shown to catch first. ``my_dag`` (``readme_offline/dags``) puts a photo from disk in a
scene (``input_files``) and makes a batch of three with its cost.

Needs root for ``unshare -n`` (CI runs as root); elsewhere it skips and says why. About a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "readme_offline"
SECTION = "## Test your own DAGs offline, with the emulator"
FLUX_PRICE = 0.05  # flux-1.1-pro in the catalog and in the emulator


def readme_block() -> str:
    """The first ``bash`` block of the README's offline section, as written."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None, "no bash block in the README's offline section"
    return match.group(1)


def namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


def offline_env(home: Path) -> dict[str, str]:
    """The user's shell: the venv's tools on PATH, a migrated AIRFLOW_HOME, no Segmind settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SEGMIND_", "PYTHON"))}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "SEGMIND_README_OUT": str(home / "out"),
            "SEGMIND_README_PHOTO": str(home / "photo.png"),
        }
    )
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    env["PYTHONPATH"] = str(HERE / "guard")  # from here on, every Python process is guarded
    env["SEGMIND_OUTBOUND_RECORD"] = str(home / "outbound.txt")
    return env


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not namespaces_work():
        pytest.skip("needs a private network namespace (unshare -n, as root): CI has one")
    home = tmp_path_factory.mktemp("readme_offline")
    Image.new("RGB", (320, 480), "seagreen").save(home / "photo.png")
    (home / "outbound.txt").write_text("")
    config = {
        "env": offline_env(home),
        "block": readme_block(),
        "cwd": str(home),
        "log": str(home / "run.log"),
        "result": str(home / "result.json"),
        "timeout": 400,
    }
    (home / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / "runner.py"), str(home / "config.json")],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads((home / "result.json").read_text())
    result["log_text"] = (home / "run.log").read_text()
    result["home"] = home
    return result


def test_the_readme_offline_block_is_what_the_emulator_prints() -> None:
    block = readme_block()
    assert "segmind-emulator --port 8765 --time-scale 0.05 &" in block
    from segmind_provider.testing.emulator.cli import PRINTED_KEY
    from segmind_provider.testing.emulator.control import connection_dict

    printed = json.dumps(connection_dict("http://127.0.0.1:8765", PRINTED_KEY, 0.05))
    assert f"export AIRFLOW_CONN_SEGMIND_DEFAULT='{printed}'" in block


def test_the_catchers_catch_an_outbound_attempt(offline_run: dict[str, Any]) -> None:
    assert all(code != 0 for code in offline_run["controls"])
    caught = offline_run["controls_caught"]
    assert any("api.segmind.com" in line for line in caught["proxy"]), caught
    assert any("workflows-api.segmind.com" in line for line in caught["guard"]), caught


def test_the_readme_offline_run_makes_no_outbound_attempt(offline_run: dict[str, Any]) -> None:
    assert offline_run["returncode"] == 0, offline_run["log_text"][-6000:]
    assert offline_run["proxy"] == [] and offline_run["guard"] == []
    endpoints = [call["endpoint"] for call in offline_run["calls"]]
    assert endpoints.count("upload") == 1  # the photo went to the emulator's storage
    assert endpoints.count("submit") == 4 and "history" in endpoints  # costs from its account API


def test_the_readme_offline_run_stores_images_with_known_costs(offline_run: dict[str, Any]) -> None:
    out = Path(offline_run["home"]) / "out"
    with Image.open(out / "scene.png") as scene:
        assert scene.format == "PNG"
    manifest = json.loads((out / "campaign" / "manifest.json").read_text())
    assert manifest["completed"] == 3
    assert all(item["cost"] == pytest.approx(FLUX_PRICE) for item in manifest["items"].values())
    assert manifest["cost"] == pytest.approx(3 * FLUX_PRICE)
    for key in manifest["items"]:
        with Image.open(out / "campaign" / f"{key}.png") as image:
            assert image.format == "PNG"
    assert f"cost ${3 * FLUX_PRICE:.4f}" in offline_run["log_text"]


def test_the_readme_offline_run_polls_at_the_emulator_pace(offline_run: dict[str, Any]) -> None:
    """Both triggers were given the connection's time_scale, which scales their poll schedule (the
    schedule itself is tested in tests/unit/test_polling.py), and no note of a missing one was logged.

    The single operator's trigger is in the metadata database. The batch's waves of 0.7 s were
    waited for in the worker, which only a trigger that knew the scale decides (unscaled, a wave of
    flux-1.1-pro is due in 14 s, beyond ``worker_wait``, and would have deferred)."""
    assert "sets no time_scale" not in offline_run["log_text"]
    with sqlite3.connect(Path(offline_run["home"]) / "airflow.db") as db:
        rows = db.execute("SELECT classpath, kwargs FROM trigger").fetchall()
    scales = {classpath.rsplit(".", 1)[1]: json.loads(kwargs)["time_scale"] for classpath, kwargs in rows}
    assert scales == {"SegmindRequestTrigger": 0.05}
    assert (
        "Wave 1 is due in" in offline_run["log_text"]
        and "waited for in the worker" in offline_run["log_text"]
    )
