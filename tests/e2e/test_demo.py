"""The README's first command, as a newcomer runs it: the demo script end to end on the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_demo_produces_gallery_manifest_and_images(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMIND_", "AIRFLOW"))}
    output, home = tmp_path / "output", tmp_path / "airflow-home"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--products",
            "trail-runner-x2,aurora-headlamp",
            "--output",
            str(output),
            "--airflow-home",
            str(home),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Gallery:" in done.stdout and "emulator" in done.stdout
    (manifest_path,) = output.glob("published/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    by_id = {p["product_id"]: p for p in manifest["products"]}
    assert by_id["trail-runner-x2"]["status"] == "published"
    assert by_id["aurora-headlamp"]["status"] == "failed" and "headlamp" in by_id["aurora-headlamp"]["error"]
    assert (manifest_path.parent / "index.html").is_file()
    images = list(manifest_path.parent.glob("trail-runner-x2/*.jpg"))
    assert len(images) == 4
    for image_path in images:
        with Image.open(image_path) as image:
            image.verify()
    # nothing left running: a second run on the same folders works too
    again = subprocess.run(done.args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
