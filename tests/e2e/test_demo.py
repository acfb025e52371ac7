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

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_produces_gallery_manifest_and_images(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMIND_", "AIRFLOW"))}
    output, home = tmp_path / "output", tmp_path / "airflow-home"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--products",
            "summit-bottle-750,aurora-headlamp",
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
    # Unattended: the approval step approved itself, and the demo said so.
    assert "Demo mode" in done.stdout and "review   ✓ approved automatically (demo mode)" in done.stdout
    (manifest_path,) = output.glob("published/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["approved_by"] == "approved automatically (demo mode)"
    by_id = {p["product_id"]: p for p in manifest["products"]}
    bottle, lamp = by_id["summit-bottle-750"], by_id["aurora-headlamp"]
    assert bottle["status"] == "published" and bottle["caption"]
    assert set(bottle["files"]) >= {"photo", "cutout", "scene", "square", "story", "link_card", "thumbnail"}
    assert lamp["status"] == "failed" and "headlamp" in lamp["errors"]["scene"]
    assert set(lamp["files"]) == {"photo", "cutout"}  # the stages it got through are shown too
    gallery = (manifest_path.parent / "index.html").read_text()
    for product in (bottle, lamp):
        for relative in [*product["files"].values(), *product["previews"].values()]:
            assert relative in gallery or relative.endswith(("story.jpg", "link_card.jpg", "square.jpg"))
            with Image.open(manifest_path.parent / relative) as image:
                image.verify()
    # Nothing left running: a second run on the same folders works too. One product is enough to
    # meet anything the first run left behind (its Airflow home, emulator port, output folder).
    args = [*done.args]
    args[args.index("--products") + 1] = "summit-bottle-750"
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Gallery:" in again.stdout
