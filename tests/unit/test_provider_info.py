"""Airflow discovers the provider through its entry point, as users install it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import segmind_provider
from segmind_provider.hooks.segmind import SegmindHook


def _airflow(*args: str, home: Path) -> str:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_entry_point_points_at_get_provider_info() -> None:
    (ep,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("segmind")]
    assert ep.load() is segmind_provider.get_provider_info


def test_provider_info_matches_the_hook() -> None:
    info = segmind_provider.get_provider_info()
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == SegmindHook.conn_type == "segmind"
    assert conn["hook-class-name"] == f"{SegmindHook.__module__}.{SegmindHook.__qualname__}"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API Key"
    assert info["versions"] == [segmind_provider.__version__]


def test_airflow_cli_lists_the_provider_and_its_connection_type(tmp_path: Path) -> None:
    providers = json.loads(_airflow("providers", "list", "--output", "json", home=tmp_path))
    assert "airflow-provider-segmind" in {p["package_name"] for p in providers}
    hooks = json.loads(_airflow("providers", "hooks", "--output", "json", home=tmp_path))
    segmind = [h for h in hooks if h["connection_type"] == "segmind"]
    assert segmind and segmind[0]["class"] == "segmind_provider.hooks.segmind.SegmindHook"


def test_the_task_decorators_are_registered_under_their_names() -> None:
    from airflow.sdk import task

    from segmind_provider.decorators.segmind import segmind_batch_task, segmind_task

    assert task.segmind is segmind_task and task.segmind_batch is segmind_batch_task
