"""Issue 20, defect 1: a batch whose costs could not be read says "unknown", never ``$0.0000``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from segmind_provider.operators.segmind import SegmindBatchOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator

SMALL = {"aspect_ratio": "custom", "width": 256, "height": 256, "output_format": "png"}


def run_batch(tmp_path: Path, make_context: Any, n: int = 3) -> dict[str, Any]:
    op = SegmindBatchOperator(
        task_id="campaign",
        model="flux-1.1-pro",
        payloads=[{"prompt": f"a lighthouse {i}", "seed": i, **SMALL} for i in range(n)],
        output_dir=str(tmp_path / "out"),
        deferrable=False,
        poll_interval=0.2,
        timeout=60,
    )
    return op.execute(make_context())  # type: ignore[no-any-return]


def test_costs_read_from_the_history_are_reported(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Any, task_log: Callable[[], str]
) -> None:
    manifest = run_batch(tmp_path, make_context)
    assert manifest["cost"] == pytest.approx(0.15)
    assert "cost $0.1500" in task_log()


def test_an_unreadable_history_reports_the_cost_as_unknown(
    emulator: SegmindEmulator,
    tmp_path: Path,
    make_context: Any,
    task_log: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = json.loads(emulator.connection_json())
    conn["extra"]["max_retries"] = 0  # the history's 503s end at once
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    emulator.add_fault("history", status=503)
    manifest = run_batch(tmp_path, make_context)
    assert manifest["completed"] == 3
    text = task_log()
    (line,) = [line for line in text.splitlines() if "Batch done" in line]
    assert "cost unknown" in line and "cost $0.0000" not in line
