"""Running the DAGs in ``tests/e2e/dags`` with `airflow dags test`: a migrated temporary AIRFLOW_HOME
(SQLite, no examples) and the commands, for the tests in test_dags_test.py and test_batch_dags.py
(their emulator and home are session fixtures in conftest.py, paid for once)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

DAGS = Path(__file__).parent / "dags"
TIME_SCALE = 0.05  # flux-1.1-pro "takes" ~0.7 s
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def migrated_home(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A fresh AIRFLOW_HOME (SQLite, no examples, the e2e DAGs), migrated; its environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "SEGMIND_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "SEGMIND_E2E_OUTPUT": str(home / "out"),
            "SEGMIND_E2E_EXPECTED_DURATION": str(14.0 * TIME_SCALE),
            **extra,
        }
    )
    airflow(env, "db", "migrate")
    return env


def airflow(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


def run_dags_test(dag_id: str, env: dict[str, str]) -> tuple[int, str]:
    """`airflow dags test DAG_ID`: its exit code and its output (stdout, then stderr)."""
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def dags_test(dag_id: str, env: dict[str, str]) -> str:
    """`airflow dags test DAG_ID`, which must succeed; its output."""
    returncode, output = run_dags_test(dag_id, env)
    assert returncode == 0, output[-5000:]
    return output


def xcom(env: dict[str, str], dag_id: str, key: str, task_id: str = "generate") -> Any:
    """Read one XCom from the temporary metadata database."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND key = ? AND task_id = ?", (dag_id, key, task_id)
        ).fetchone()
    assert row is not None, f"no XCom {key!r}"
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value
