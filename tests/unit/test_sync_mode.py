"""Issue 20, defect 4: ``mode="sync"`` says what it called and where the output went, and the
video extra is asked for before anything is charged, not after six retried 500s."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator

FLUX = "flux-1.1-pro"
SMALL = {"aspect_ratio": "custom", "width": 256, "height": 256}


def test_sync_mode_logs_the_call_and_where_the_output_went(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, task_log: Callable[[], str]
) -> None:
    op = SegmindOperator(
        task_id="quick",
        model=FLUX,
        payload={"prompt": "a lighthouse", "output_format": "png", **SMALL},
        mode="sync",
        output_path=str(tmp_path / "quick"),
    )
    result = op.execute(make_context())
    (uri,) = result["output_uris"]
    text = task_log()
    assert f"POST /v1/{FLUX}" in text  # the call
    assert f"stored {uri}" in text  # where the output went
    assert "no request id" in text  # why the result's request_id is None
    assert result["request_id"] is None


def test_sync_mode_without_output_path_says_nothing_was_kept(
    emulator: SegmindEmulator, make_context: Any, task_log: Callable[[], str]
) -> None:
    op = SegmindOperator(
        task_id="quick", model=FLUX, payload={"prompt": "a lighthouse", **SMALL}, mode="sync"
    )
    op.execute(make_context())
    assert "not kept" in task_log()


#: Runs the real operator against an emulator in a process where PyAV cannot be imported.
WITHOUT_PYAV = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    class NoPyAV(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "av" or name.startswith("av."):
                raise ModuleNotFoundError("No module named 'av' (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NoPyAV())
    from segmind_provider.exceptions import SegmindError
    from segmind_provider.operators.segmind import SegmindOperator
    from segmind_provider.testing.emulator.runner import SegmindEmulator

    class TI:
        try_number = 1
        def xcom_push(self, key, value):
            pass

    out = {}
    with SegmindEmulator(time_scale=0.001, credits=10.0) as emu:
        os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"] = emu.connection_json()
        op = SegmindOperator(
            task_id="clip",
            model="kling-o1-image-to-video",
            payload={"prompt": "a slow zoom"},
            input_files={"start_image_url": sys.argv[3]},
            mode=sys.argv[1],
            deferrable=False,
            output_path=sys.argv[2],
            timeout=60,
        )
        try:
            op.execute({"ti": TI()})
        except SegmindError as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["calls"] = [(c["endpoint"], c["status"]) for c in emu.calls()]
        out["credits"] = emu.config()["credits"]
        out["av_loaded"] = "av" in sys.modules
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_video_model_without_pyav_is_refused_before_any_charge(mode: str, tmp_path: Path) -> None:
    still = tmp_path / "still.png"
    Image.new("RGB", (64, 48), "teal").save(still)
    out_dir = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYAV, mode, str(out_dir / "clip"), str(still)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "airflow-provider-segmind[emulator]" in out.get("error", ""), out
    # the still uploaded to the emulator's storage, then one refusal: no 500s, nothing charged
    assert out["calls"] == [["upload", 200], ["submit" if mode == "async" else "sync", 400]]
    assert out["credits"] == 10.0 and not out["av_loaded"]
    assert not out_dir.exists()
