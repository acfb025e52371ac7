"""One SegmindBatchOperator over N payloads in a real deployment, once per ``worker_wait``, side by side.

The deployment ``tests/e2e/airflow_deployment.py`` builds (api-server, scheduler, dag-processor,
triggerer; LocalExecutor on SQLite; the emulator for Segmind at ``--time-scale``: flux-1.1-pro's
~14 s becomes ~0.7 s at 0.05) runs one DAG per ``--worker-wait`` value, one after the other, each a
single ``SegmindBatchOperator(model="flux-1.1-pro", payloads=<a JSON Lines file of N payloads>,
max_in_flight=M, deferrable=True, worker_wait=W)`` (256x256 images). ``airflow dags
test`` runs a trigger in the task's own process; here the scheduler queues the task, the executor
starts a task process, the triggerer runs the trigger, and every deferral is that whole round trip.
``--executor celery`` runs the same DAGs on ``tests/e2e/distributed_stack.py``'s stack instead
(CeleryExecutor with two workers, two triggerers, PostgreSQL, Redis).

Printed per run: wall time from the trigger to the run's end against the ideal (N x the model's
scaled time / M), the task's deferrals and tries (a try past the first is a retry: Airflow's
stale-executor race, apache/airflow#72716, shows as ``state mismatch`` in the audit log, counted),
the images stored, the jobs the emulator made and how many of them repeat a payload (paid twice),
and the task's state each time the scheduler read an executor report of its processes.

Usage: ``python bench/batch_deployment.py --n 200 --max-in-flight 20 --worker-wait 0 5``
(docs/benchmarks.md); ``make test-e2e`` runs a small one (tests/e2e/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from _common import add_run_args, markdown_table, write_json  # noqa: E402
from airflow_deployment import Deployment, deployed  # noqa: E402
from batch_scale import MODEL_SECONDS, write_payloads_file  # noqa: E402
from processes import wait_until  # noqa: E402

DAG = """
import os
import pendulum
from airflow.sdk import DAG
from segmind_provider.operators.segmind import SegmindBatchOperator

for wait in os.environ["BENCH_WORKER_WAITS"].split(","):
    dag_id = "bench_batch_wait_" + wait.replace(".", "_")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        SegmindBatchOperator(
            task_id="batch",
            model="flux-1.1-pro",
            payloads=os.environ["BENCH_PAYLOADS_FILE"],
            output_dir=os.environ["SEGMIND_OUTPUT_DIR"] + "/" + dag_id,
            max_in_flight=int(os.environ["BENCH_IN_FLIGHT"]),
            deferrable=True,
            worker_wait=float(wait),
            expected_duration=float(os.environ["BENCH_EXPECTED"]),
            poll_interval=2.0,
            timeout=3600,
        )
"""


def dag_id_of(wait: float) -> str:
    return "bench_batch_wait_" + str(wait).replace(".", "_")


_REPORT = re.compile(r"TaskInstance Finished: dag_id=(?P<dag>[^,]+),.*?, state=(?P<state>\w+), executor=")


def reports_seen_in(scheduler_log: str, dag_id: str) -> dict[str, int]:
    """The task's state when the scheduler read each executor report of a finished task process (its
    ``TaskInstance Finished`` log line): ``deferred`` is the safe order; ``scheduled`` means the
    trigger fired first (3.3.2 lets that pass); ``queued`` or ``running`` is the race."""
    seen: Counter[str] = Counter()
    for line in scheduler_log.splitlines():
        match = _REPORT.search(line)
        if match and match["dag"] == dag_id:
            seen[match["state"]] += 1
    return dict(seen)


class LocalDeployment:
    """``tests/e2e/airflow_deployment.py``'s deployment (LocalExecutor, SQLite), as ``run_one`` reads it."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment, self.output = deployment, deployment.output

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.deployment.query(sql, *params)

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.deployment.emulator("GET", "/requests"))

    def trigger(self, dag_id: str, run_id: str) -> None:
        self.deployment.trigger_dag(dag_id, run_id, {})

    def scheduler_log(self) -> str:
        return self.deployment.logs["scheduler"].read_text(errors="replace")


class CeleryDeployment:
    """``tests/e2e/distributed_stack.py``'s stack (CeleryExecutor, two workers, two triggerers,
    PostgreSQL, Redis), as ``run_one`` reads it."""

    def __init__(self, stack: Any) -> None:
        self.stack, self.output = stack, stack.output

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.stack.query(sql.replace("?", "%s"), *params)

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.stack.emulator.requests())

    def trigger(self, dag_id: str, run_id: str) -> None:
        self.stack.trigger(dag_id, run_id, {})

    def scheduler_log(self) -> str:
        return str(self.stack.log_text("scheduler"))


@contextmanager
def local_deployment(
    root: Path, dags: Path, dag_ids: list[str], env: dict[str, str], scale: float
) -> Iterator[LocalDeployment]:
    with deployed(root, dags=dags, dag_ids=tuple(dag_ids), extra_env=env) as deployment:
        deployment.emulator("PATCH", "/config", {"time_scale": scale})
        yield LocalDeployment(deployment)


@contextmanager
def celery_deployment(
    root: Path, dags: Path, dag_ids: list[str], env: dict[str, str], scale: float
) -> Iterator[CeleryDeployment]:
    from distributed_stack import Stack, missing_services

    missing = missing_services()
    if missing:
        raise SystemExit(
            f"--executor celery needs Debian's {' and '.join(missing)} (scripts/ensure-debian-packages)"
        )
    emulator = {"time_scale": scale, "workers": 256, "call_log_size": 1_000_000}
    stack = Stack(emulator_options=emulator, extra_env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)})
    stack.extra_env["SEGMIND_OUTPUT_DIR"] = str(stack.output)
    try:
        stack.start()
        for dag_id in dag_ids:
            stack.wait_for_dag(dag_id)
        yield CeleryDeployment(stack)
    finally:
        stack.stop()  # its root (PostgreSQL's files, the images) too


def run_one(
    deployment: LocalDeployment | CeleryDeployment, dag_id: str, n: int, ideal: float
) -> dict[str, Any]:
    """Trigger the DAG, wait for its end, count what it did."""
    wait_until(
        lambda: deployment.query("SELECT 1 FROM dag WHERE dag_id = ?", dag_id),
        300,
        f"{dag_id} parsed",
        interval=1,
    )
    jobs_before = len(deployment.jobs())
    started = time.monotonic()
    deployment.trigger(dag_id, "bench-1")

    def ended() -> bool:
        rows = deployment.query("SELECT state FROM dag_run WHERE dag_id = ?", dag_id)
        return bool(rows) and rows[0][0] in ("success", "failed")

    wait_until(ended, 4 * 3600, f"{dag_id} to end", interval=0.5)
    wall = time.monotonic() - started
    jobs = deployment.jobs()[jobs_before:]
    prompts = Counter(str((job.get("body") or {}).get("prompt")) for job in jobs)
    (state,) = deployment.query("SELECT state FROM dag_run WHERE dag_id = ?", dag_id)[0]
    (tries,) = deployment.query("SELECT try_number FROM task_instance WHERE dag_id = ?", dag_id)[0]

    def events(event: str) -> int:
        sql = "SELECT count(*) FROM log WHERE dag_id = ? AND event = ?"
        return int(deployment.query(sql, dag_id, event)[0][0])

    stored = deployment.output / dag_id
    return {
        "dag_id": dag_id,
        "n": n,
        "state": state,
        "wall_s": round(wall, 1),
        "ideal_s": round(ideal, 1),
        "wall_over_ideal": round(wall / ideal, 2),
        "deferrals": events("deferred"),
        "tries": int(tries),
        "races": events("state mismatch"),
        "reports_seen_in": reports_seen_in(deployment.scheduler_log(), dag_id),
        "stored": sum(1 for p in stored.glob("*.png")) if stored.exists() else 0,
        "jobs": len(jobs),
        "paid_twice": sum(count - 1 for count in prompts.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--max-in-flight", type=int, default=20)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--worker-wait", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="local: LocalExecutor on SQLite; celery: CeleryExecutor, PostgreSQL, Redis, two workers, two triggerers",
    )
    add_run_args(parser, "batch_deployment")
    args = parser.parse_args(argv)
    ideal = args.n * MODEL_SECONDS * args.time_scale / args.max_in_flight
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="segmind-batch-deployment-") as root:
        dags = Path(root) / "dags"
        dags.mkdir()
        (dags / "bench_batch_wait.py").write_text(DAG)
        dag_ids = [dag_id_of(w) for w in args.worker_wait]
        env = {
            "BENCH_WORKER_WAITS": ",".join(str(w) for w in args.worker_wait),
            "BENCH_PAYLOADS_FILE": str(write_payloads_file(args.n, Path(root))),
            "BENCH_IN_FLIGHT": str(args.max_in_flight),
            "BENCH_EXPECTED": str(MODEL_SECONDS * args.time_scale),
        }
        start = celery_deployment if args.executor == "celery" else local_deployment
        with start(Path(root), dags, dag_ids, env, args.time_scale) as deployment:
            for dag_id in dag_ids:
                row = {"executor": args.executor, **run_one(deployment, dag_id, args.n, ideal)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    headers = list(rows[0])
    print(markdown_table(headers, [[row[h] for h in headers] for row in rows]))
    command = (
        f"python bench/batch_deployment.py --n {args.n} --max-in-flight {args.max_in_flight} "
        f"--time-scale {args.time_scale} --worker-wait {' '.join(str(w) for w in args.worker_wait)}"
        + (f" --executor {args.executor}" if args.executor != "local" else "")
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results = {"command": command, "when": when, "rows": rows}
    print(f"results: {write_json(args.name, results, args.results_dir)}")
    return 0 if all(r["state"] == "success" and r["paid_twice"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
