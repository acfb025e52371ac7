"""How often Airflow's stale-executor-event race hits deferrable Segmind tasks, and what it costs.

apache/airflow#72716: a deferred task's worker exits and the executor reports SUCCESS for that try;
if the scheduler drains that report only once the trigger has fired and the resumed attempt is
queued or running, it writes ``state mismatch`` to the audit log and fails the task (a retry if the
task has one left). This starts the real deployment ``tests/e2e/airflow_deployment.py`` builds
(api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite; the emulator for Segmind)
with the DAGs of ``tests/e2e/race_dags``, runs every DAG ``--runs`` times with ``--fanout`` mapped
tasks each (all runs queued at once), and counts per DAG: task runs, races (``state mismatch``
events), retries, failed tasks, and for the operator the jobs submitted per task.

Usage: ``python bench/stale_event_race.py --runs 10 --fanout 6`` (docs/reliability.md). Not part of CI
(``tests/e2e/test_stale_event_race.py`` runs a few).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from _common import write_json  # noqa: E402
from airflow_deployment import Deployment, deployed  # noqa: E402
from processes import wait_until  # noqa: E402

RACE_DAGS = REPO / "tests" / "e2e" / "race_dags"
DAGS = ("segmind_race_sensor", "segmind_race_sensor_no_retries", "segmind_race_operator")
TASK_OF = {"segmind_race_operator": "generate"}


def figures(deployment: Deployment, dag_id: str, runs: int, fanout: int, jobs: int) -> dict[str, Any]:
    """One DAG's line: its waiting tasks, the races the scheduler logged, retries, failures, jobs paid.

    A ``state mismatch`` on a task that had not deferred (a worker that never started under load,
    "finished with state failed ... state attribute is queued") is counted apart: it is not this race.
    """
    task_id = TASK_OF.get(dag_id, "wait")
    rows = deployment.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND task_id = ?", dag_id, task_id
    )

    def events(event: str, *, same_task: bool) -> int:
        sign = "=" if same_task else "!="
        sql = f"SELECT count(*) FROM log WHERE dag_id = ? AND task_id {sign} ? AND event = ?"
        return int(deployment.query(sql, dag_id, task_id, event)[0][0])

    deferred = deployment.query(
        "SELECT count(DISTINCT run_id || map_index) FROM log WHERE dag_id = ? AND task_id = ? AND event = 'deferred'",
        dag_id,
        task_id,
    )[0][0]
    run_states = [row[0] for row in deployment.query("SELECT state FROM dag_run WHERE dag_id = ?", dag_id)]
    ran = [row for row in rows if row[0] != "upstream_failed"]
    return {
        "dag_id": dag_id,
        "dag_runs": runs,
        "task_runs": len(ran),
        "not_run_upstream_failed": len(rows) - len(ran),
        "deferred_tasks": int(deferred),
        "races": events("state mismatch", same_task=True),
        "retried_tasks": sum(1 for row in ran if int(row[1]) > 1),
        "failed_tasks": sum(1 for row in ran if row[0] != "success"),
        "state_mismatch_other_tasks": events("state mismatch", same_task=False),
        "failed_dag_runs": sum(1 for state in run_states if state != "success"),
        "jobs_submitted": jobs,
        "duplicate_jobs": jobs - runs * fanout,
    }


def race(deployment: Deployment, runs: int, fanout: int, time_scale: float) -> dict[str, Any]:
    """Queue every run at once (the three DAGs interleaved, sharing the scheduler), wait, count."""
    deployment.emulator("PATCH", "/config", {"time_scale": time_scale})
    started = time.monotonic()
    for n in range(runs):
        for dag_id in DAGS:
            deployment.trigger_dag(dag_id, f"race-{n:03d}", {})

    def finished() -> bool:
        states = deployment.query("SELECT state FROM dag_run")
        return len(states) == runs * len(DAGS) and all(s[0] in ("success", "failed") for s in states)

    wait_until(finished, 60 * 60, "every race DAG run to finish", interval=2)
    seconds = time.monotonic() - started
    prompts = [
        str((job.get("body") or {}).get("prompt", "")) for job in deployment.emulator("GET", "/requests")
    ]
    results = [
        figures(deployment, dag_id, runs, fanout, sum(1 for p in prompts if p.startswith(f"{dag_id}/")))
        for dag_id in DAGS
    ]
    return {"seconds": round(seconds, 1), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="DAG runs per DAG")
    parser.add_argument("--fanout", type=int, default=6, help="mapped tasks per DAG run")
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism")
    parser.add_argument(
        "--time-scale", type=float, default=0.5, help="emulator time scale (flux ~14 s x this)"
    )
    parser.add_argument("--name", default="stale_event_race", help="results file bench/results/<name>.json")
    args = parser.parse_args()
    options = {
        "dags": RACE_DAGS,
        "dag_ids": DAGS,
        "parallelism": args.parallelism,
        "extra_env": {"SEGMIND_RACE_FANOUT": str(args.fanout)},
    }
    with (
        tempfile.TemporaryDirectory(prefix="segmind-race-") as root,
        deployed(Path(root), **options) as deployment,
    ):
        measured = race(deployment, args.runs, args.fanout, args.time_scale)
    payload = {
        "command": f"python bench/stale_event_race.py --runs {args.runs} --fanout {args.fanout} "
        f"--parallelism {args.parallelism} --time-scale {args.time_scale}",
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **measured,
    }
    print(json.dumps(payload, indent=2))
    print(f"results: {write_json(args.name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
