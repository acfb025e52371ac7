"""One SegmindBatchOperator over N payloads through Airflow itself (`airflow dags test`), side by side.

For each N and each code under test (this checkout, and ``--baseline REF``: the same run with the
package of a git ref, checked out into a temporary worktree and put first on ``PYTHONPATH``): a fresh
AIRFLOW_HOME on SQLite, migrated; the emulator in its own process (``--time-scale``: flux-1.1-pro's
~14 s becomes ~0.7 s at 0.05), an unlimited key; one DAG whose one task is
``SegmindBatchOperator(model="flux-1.1-pro", payloads=[N dicts], max_in_flight=M, deferrable=True,
output_dir=...)`` (256x256 images: the emulator draws each one, and this measures the provider, not
the drawing); `airflow dags test` runs it, the trigger in the same process as the task.

Printed per run: wall time against the ideal (N x the model's scaled time / M), the waves, bytes per
item in the metadata database (the SQLite file's growth) and in the manifest, the `dags test`
process's CPU per item (task and trigger; the emulator's is its own) and peak RSS, and the submits the
emulator saw (duplicates would show as more than N). Results go to ``bench/results/batch_scale.json``.

``--payloads-file`` passes the payloads as a JSON Lines file (the way docs/operator.md advises for
tens of thousands) instead of a list in the DAG file; ``--worker-wait`` runs this checkout once per
value of the operator's ``worker_wait`` (0: every wave defers), and each row counts the task's
deferrals (from Airflow's audit log).

Usage: ``python bench/batch_scale.py --n 1000 10000 --baseline 3f30835`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS_DIR,
    CallCounts,
    add_run_args,
    machine,
    markdown_table,
    process_cpu_seconds,
    start_emulator,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
MODEL_SECONDS = 14.0  # flux-1.1-pro's typical time in the catalog and the emulator, before scaling

DAG = """
import os
import pendulum
from airflow.sdk import DAG
from segmind_provider.operators.segmind import SegmindBatchOperator

N = int(os.environ["BENCH_N"])
with DAG("bench_batch_scale", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    SegmindBatchOperator(
        task_id="batch",
        model="flux-1.1-pro",
        payloads=os.environ.get("BENCH_PAYLOADS_FILE") or [
            {"prompt": f"a studio photo of product {i}, soft light", "seed": i, "aspect_ratio": "custom",
             "width": 256, "height": 256, "output_format": "png"}
            for i in range(N)
        ],
        output_dir=os.environ["BENCH_OUT"],
        max_in_flight=int(os.environ["BENCH_IN_FLIGHT"]),
        deferrable=True,
        **({"worker_wait": float(os.environ["BENCH_WORKER_WAIT"])} if os.environ.get("BENCH_WORKER_WAIT") else {}),
        expected_duration=float(os.environ["BENCH_EXPECTED"]),
        poll_interval=2.0,
        retries=0,
        timeout=3600,
    )
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _deferrals(db: Path) -> int:
    """The task's deferrals: Airflow's audit log records each one (event ``deferred``)."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM log WHERE event = 'deferred'").fetchone()[0])


def _baseline_tree(ref: str, where: Path) -> Path:
    tree = where / f"baseline-{ref}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True)
    return tree


def write_payloads_file(n: int, where: Path) -> Path:
    """The DAG's N payloads as a JSON Lines file, one per line (``--payloads-file``)."""
    path = where / "payloads.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            payload = {"prompt": f"a studio photo of product {i}, soft light", "seed": i}
            payload.update({"aspect_ratio": "custom", "width": 256, "height": 256, "output_format": "png"})
            handle.write(json.dumps(payload) + "\n")
    return path


def run_one(
    n: int,
    in_flight: int,
    scale: float,
    code: Path | None,
    work: Path,
    payloads_file: bool = False,
    worker_wait: float | None = None,
    py_spy: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """One `airflow dags test` of the batch DAG; ``code``: a checkout whose package is used instead;
    ``payloads_file``: the payloads as a JSON Lines file instead of a list in the DAG; ``worker_wait``:
    the operator's (None: its default); ``py_spy``: the py-spy binary to record the run with, and the
    folder its profile goes to (speedscope's format; --gil: the thread holding the GIL, so CPU, not waits)."""
    home = work / (
        f"home-{n}-{'baseline' if code else 'this'}{'-file' if payloads_file else ''}-wait{worker_wait}"
    )
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / "bench_batch_scale.py").write_text(DAG)
    out = home / "out"
    emulator = start_emulator(time_scale=scale)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "AIRFLOW_CONN_SEGMIND_DEFAULT": emulator.connection_json(),
            "BENCH_N": str(n),
            "BENCH_OUT": str(out),
            "BENCH_IN_FLIGHT": str(in_flight),
            "BENCH_EXPECTED": str(MODEL_SECONDS * scale),
        }
    )
    if payloads_file:
        env["BENCH_PAYLOADS_FILE"] = str(write_payloads_file(n, home))
    if worker_wait is not None:
        env["BENCH_WORKER_WAIT"] = str(worker_wait)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    try:
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=home, check=True, capture_output=True)
        db = home / "airflow.db"
        before = db.stat().st_size
        cpu, emulator_cpu = _children_cpu(), process_cpu_seconds(emulator.pid)
        command = [AIRFLOW, "dags", "test", "bench_batch_scale"]
        if py_spy is not None:
            binary, folder = py_spy
            folder.mkdir(parents=True, exist_ok=True)
            profile = folder / f"{home.name}.speedscope.json"
            spy = [str(binary), "record", "--subprocesses", "--gil", "--format", "speedscope", "-r", "50"]
            command = [*spy, "-o", str(profile), "--", *command]
        started = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *command],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        cpu = _children_cpu() - cpu
        emulator_cpu = process_cpu_seconds(emulator.pid) - emulator_cpu
        rss_kb = int(proc.stderr.strip().splitlines()[-1]) if proc.stderr.strip() else 0
        calls = CallCounts.from_calls(emulator.calls())
    finally:
        emulator.stop()
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    ideal = n * MODEL_SECONDS * scale / in_flight
    return {
        "code": "baseline" if code else "this",
        "n": n,
        "payloads": "file" if payloads_file else "list",
        "worker_wait": worker_wait,
        "deferrals": _deferrals(db),
        "ok": proc.returncode == 0,
        "completed": manifest.get("completed"),
        "wall_s": round(wall, 1),
        "ideal_s": round(ideal, 1),
        "wall_over_ideal": round(wall / ideal, 2),
        "waves": manifest.get("waves"),
        "db_bytes_per_item": round((db.stat().st_size - before) / n),
        "manifest_bytes_per_item": round(manifest_path.stat().st_size / n)
        if manifest_path.exists()
        else None,
        "profiled": py_spy is not None,  # CPU and RSS below then include py-spy's
        "cpu_ms_per_item": round(cpu * 1000 / n, 1),
        "emulator_cpu_ms_per_item": round(emulator_cpu * 1000 / n, 1),
        "peak_rss_mb": round(rss_kb / 1024),
        "submits": calls.submit,
        "status_polls": calls.status,
        "tail": "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-1500:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--baseline", help="a git ref whose package runs the same batch, side by side")
    parser.add_argument(
        "--payloads-file",
        action="store_true",
        help="pass the payloads as a JSON Lines file, not a list in the DAG",
    )
    parser.add_argument(
        "--worker-wait",
        type=float,
        nargs="+",
        default=[None],
        help="the operator's worker_wait, one run each (0: every wave defers); default: the operator's",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="record each `dags test` with this py-spy binary (profiles: bench/results/profiles/, not kept "
        "in git); the run's CPU and RSS figures then include py-spy's own, and its rows say profiled",
    )
    add_run_args(parser, "batch_scale")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="segmind-batch-scale-") as scratch:
        work = Path(scratch)
        baseline = _baseline_tree(args.baseline, work) if args.baseline else None
        try:
            for n in args.n:
                for code, wait in [(None, w) for w in args.worker_wait] + (
                    [(baseline, None)] if baseline else []
                ):
                    row = run_one(
                        n,
                        args.max_in_flight,
                        args.time_scale,
                        code,
                        work,
                        args.payloads_file,
                        wait,
                        (args.py_spy, (args.results_dir or RESULTS_DIR) / "profiles")
                        if args.py_spy
                        else None,
                    )
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
                    if row["tail"]:
                        print(row["tail"], file=sys.stderr)
        finally:
            if baseline is not None:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False
                )
    headers = [
        "code",
        "n",
        "payloads",
        "worker_wait",
        "ok",
        "wall_s",
        "ideal_s",
        "wall_over_ideal",
        "waves",
        "deferrals",
        "db_bytes_per_item",
        "manifest_bytes_per_item",
        "cpu_ms_per_item",
        "emulator_cpu_ms_per_item",
        "peak_rss_mb",
        "submits",
    ]
    print(markdown_table(headers, [[row[h] for h in headers] for row in rows]))
    write_json(args.name, {"machine": machine(), "args": vars(args), "rows": rows}, args.results_dir)
    return 0 if all(row["ok"] and row["submits"] == row["n"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
