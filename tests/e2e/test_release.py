"""Issue 20, defect 3: the release workflow's build and checks pass here, and both packages carry
the LICENSE (Apache-2.0, as the metadata says).

The workflow's own ``run`` steps of its build job are executed (its tool install aside: ``build`` and
``twine`` come with the test extra) on a copy of the work tree, so the workflow cannot drift from
what is checked here. About 40 s (two isolated builds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import segmind_provider

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def work_tree_copy(dest: Path) -> Path:
    """The files git would ship (tracked and new, ignored ones left out), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def build_steps() -> list[str]:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["build"]["steps"]
    scripts = []
    for step in steps:
        if "run" in step:
            lines = [line for line in step["run"].splitlines() if "pip install" not in line]
            scripts.append("\n".join(lines))
    return scripts


def test_the_release_build_checks_pass_and_both_packages_carry_the_license(tmp_path: Path) -> None:
    tree = work_tree_copy(tmp_path / "tree")
    version = segmind_provider.__version__  # the workflow checks the tag against pyproject.toml: they agree
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_REF_NAME": f"v{version}",
    }
    for script in build_steps():
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    (wheel,) = (tree / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (inside,) = [n for n in names if n.endswith("dist-info/licenses/LICENSE")]
        assert archive.read(inside).decode() == license_text
        metadata = archive.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


def test_a_tag_that_does_not_name_the_version_is_refused(tmp_path: Path) -> None:
    (check,) = [s for s in build_steps() if "GITHUB_REF_NAME" in s]
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-c", check],
        cwd=tmp_path,
        env={**env, "GITHUB_REF_NAME": "v9.9.9"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "is not v" in done.stdout
