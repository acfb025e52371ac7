"""How often Airflow's stale-executor-event race hits deferrable Segmind tasks, and what it costs.

apache/airflow#72716: a deferred task's worker exits and the executor reports SUCCESS for that try;
if the scheduler drains that report only once the trigger has fired and the resumed attempt is
queued or running, it writes ``state mismatch`` to the audit log and fails the task (a retry if the
task has one left). This starts the real deployment ``tests/e2e/airflow_deployment.py`` builds
(api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite; the emulator for Segmind)
with the DAGs of ``tests/e2e/race_dags`` and runs every DAG ``--runs`` times with ``--fanout`` mapped
tasks each, in the shape of the report in #72716 (many deferred tasks of one run resuming together):

- ``burst`` (default): one run at a time; the jobs would take ~23 minutes (emulator time scale 100),
  so every waiting task defers; once all of a run's tasks are deferred the emulator's clock jumps
  (``advance``) and all their jobs end at once: the triggers fire within a poll interval (2 s) of
  each other, some seconds after the last task deferred, and the tasks resume together;
- ``queued``: every run queued at once with jobs of ``--time-scale`` x 14 s; under load the
  sensors mostly start after their job ended and never defer (kept for comparison).

It counts per DAG: task runs, deferrals, races (``state mismatch`` on the waiting task), retries,
failed tasks, jobs paid per task.

Usage: ``python bench/stale_event_race.py --runs 6 --fanout 10`` (docs/reliability.md). Not part of CI
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
#: ``segmind_race_batch`` (one task, a wave per item) runs in ``--mode queued`` only: burst mode waits
#: for every mapped task to defer.
TASK_OF = {"segmind_race_operator": "generate", "segmind_race_batch": "campaign"}


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


HOLD_SCALE = 100.0
"""Emulator time scale in burst mode: flux-1.1-pro would take ~23 min, so nothing ends by itself."""
JUMP_SECONDS = 1800.0
"""The emulator clock's jump: past every held job's end (jitter included), within results' hour."""


def _finished(deployment: Deployment, dag_id: str, run_id: str | None = None) -> bool:
    sql = "SELECT state FROM dag_run WHERE dag_id = ?" + (" AND run_id = ?" if run_id else "")
    states = deployment.query(sql, dag_id, *([run_id] if run_id else []))
    return bool(states) and all(state[0] in ("success", "failed") for state in states)


def burst(deployment: Deployment, dag_id: str, run_id: str, fanout: int) -> None:
    """One run: wait until each of its tasks has deferred (or ended), then end all their jobs at once."""
    task_id = TASK_OF.get(dag_id, "wait")
    deployment.trigger_dag(dag_id, run_id, {})

    def all_waiting() -> bool:
        rows = deployment.query(
            "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index >= 0",
            dag_id,
            run_id,
            task_id,
        )
        settled = ("deferred", "success", "failed", "upstream_failed")
        return (len(rows) == fanout and all(row[0] in settled for row in rows)) or _finished(
            deployment, dag_id, run_id
        )

    wait_until(all_waiting, 1800, f"{dag_id} {run_id}: every task deferred", interval=1)
    deployment.emulator("POST", "/advance", {"seconds": JUMP_SECONDS})
    wait_until(
        lambda: _finished(deployment, dag_id, run_id), 1800, f"{dag_id} {run_id} to finish", interval=1
    )


def race(
    deployment: Deployment, runs: int, fanout: int, time_scale: float, mode: str, dags: tuple[str, ...]
) -> dict[str, Any]:
    """Run every DAG ``runs`` times (burst: one run at a time; queued: all at once), then count."""
    started = time.monotonic()
    if mode == "burst":
        deployment.emulator("PATCH", "/config", {"time_scale": HOLD_SCALE})
        for n in range(runs):
            for dag_id in dags:
                burst(deployment, dag_id, f"race-{n:03d}", fanout)
    else:
        deployment.emulator("PATCH", "/config", {"time_scale": time_scale})
        for n in range(runs):
            for dag_id in dags:
                deployment.trigger_dag(dag_id, f"race-{n:03d}", {})
        wait_until(
            lambda: all(_finished(deployment, d) for d in dags), 3600, "every race run to finish", interval=2
        )
    seconds = time.monotonic() - started
    prompts = [
        str((job.get("body") or {}).get("prompt", "")) for job in deployment.emulator("GET", "/requests")
    ]
    results = [
        figures(deployment, dag_id, runs, fanout, sum(1 for p in prompts if p.startswith(f"{dag_id}/")))
        for dag_id in dags
    ]
    return {"seconds": round(seconds, 1), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6, help="DAG runs per DAG")
    parser.add_argument("--fanout", type=int, default=10, help="mapped tasks per DAG run")
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism")
    parser.add_argument(
        "--mode", choices=("burst", "queued"), default="burst", help="see the module docstring"
    )
    parser.add_argument("--time-scale", type=float, default=0.5, help="queued mode: flux ~14 s x this")
    parser.add_argument("--name", default="stale_event_race", help="results file bench/results/<name>.json")
    parser.add_argument("--dags", default=",".join(DAGS), help="comma-separated DAG ids of race_dags/")
    args = parser.parse_args()
    dags = tuple(args.dags.split(","))
    if args.mode == "burst" and "segmind_race_batch" in dags:
        parser.error("segmind_race_batch has no mapped tasks to hold: use --mode queued")
    options = {
        "dags": RACE_DAGS,
        "dag_ids": dags,
        "parallelism": args.parallelism,
        "extra_env": {"SEGMIND_RACE_FANOUT": str(args.fanout)},
    }
    with (
        tempfile.TemporaryDirectory(prefix="segmind-race-") as root,
        deployed(Path(root), **options) as deployment,
    ):
        measured = race(deployment, args.runs, args.fanout, args.time_scale, args.mode, dags)
    payload = {
        "command": f"python bench/stale_event_race.py --runs {args.runs} --fanout {args.fanout} "
        f"--parallelism {args.parallelism} --mode {args.mode} --dags {args.dags}"
        + (f" --time-scale {args.time_scale}" if args.mode == "queued" else ""),
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **measured,
    }
    print(json.dumps(payload, indent=2))
    print(f"results: {write_json(args.name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
