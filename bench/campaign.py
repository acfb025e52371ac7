"""A campaign of N images on an unlimited key: one SegmindBatchOperator vs N SegmindOperator tasks.

Both approaches are the real code paths driven the way Airflow drives them (``bench/_deferral.py``):
worker threads run ``execute`` until it defers, the trigger goes to a triggerer process that runs it
in one event loop (the triggerer's heap loaded), and its first event resumes the task. Each approach
gets a fresh emulator process (real time: ``flux-1.1-pro`` takes its ~14 s, jittered) and a fresh
triggerer process, one after the other, so what the triggerer measures is that approach's alone:

- ``triggers``: N ``SegmindOperator(deferrable=True)`` tasks, so N ``SegmindRequestTrigger`` s in one
  triggerer loop (the worker pool submits them as fast as 16 workers can);
- ``batch``: one ``SegmindBatchOperator`` task over the N payloads (``--max-in-flight``), so one
  ``SegmindBatchTrigger`` per wave.

Neither stores files (no ``output_path`` / ``output_dir``): both fetch each result, as a task would,
and the comparison is about the waits. Requests per image come from the emulator's call log (submits,
status polls, result fetches, history pages).

Usage: ``python bench/campaign.py`` (= ``--n 10000``; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MODEL, PROMPT, CallCounts, machine, markdown_table, report, start_emulator, write_json
from _deferral import DeferralRunner

APPROACHES = ("triggers", "batch")
CONN_ID = "segmind_bench"
API_KEY = "bench-campaign-key"
WORKERS = 16


def _connect(url: str, scale: float) -> None:
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "segmind",
            "host": url,
            "password": API_KEY,
            "extra": {"timeout": 60, "time_scale": scale, "account_url": url + "/account"},
        }
    )


def _warm() -> None:
    """Imports a task's trigger needs, before measuring (both approaches load the same modules)."""
    import segmind_provider.triggers.batch
    import segmind_provider.triggers.segmind  # noqa: F401


def _payload(i: int) -> dict[str, Any]:
    return {"prompt": f"{PROMPT}, variant {i}", "seed": i}


def run_approach(approach: str, n: int, scale: float, max_in_flight: int, timeout: float) -> dict[str, Any]:
    from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator
    from segmind_provider.runtime import reset_process_state

    emu = start_emulator(time_scale=scale, workers=n + 64)
    try:
        _connect(emu.base_url, scale)
        reset_process_state()
        runner = DeferralRunner(WORKERS, warm=_warm)
        emu.clear_calls()
        started = time.time()
        if approach == "batch":
            op = SegmindBatchOperator(
                task_id="campaign",
                model=MODEL,
                payloads=[_payload(i) for i in range(n)],
                segmind_conn_id=CONN_ID,
                deferrable=True,
                worker_wait=0,  # every wave to the triggerer: what this bench compares
                max_in_flight=max_in_flight,
                timeout=900,
            )
            futures = [runner.start(op)]
        else:
            futures = [
                runner.start(
                    SegmindOperator(
                        task_id=f"image_{i}",
                        model=MODEL,
                        payload=_payload(i),
                        segmind_conn_id=CONN_ID,
                        deferrable=True,
                        timeout=900,
                    )
                )
                for i in range(n)
            ]
        results, errors = [], []
        for future in futures:
            try:
                results.append(future.result(timeout=timeout))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        wall = time.time() - started
        deferrals = runner.deferrals
        triggerer = runner.stop()
        calls = CallCounts.from_calls(emu.calls())
        history = sum(1 for c in emu.calls() if c.get("endpoint") == "history")
        created = int(emu.stats()["submitted"])
    finally:
        emu.stop()
    completed = results[0]["completed"] if approach == "batch" and results else sum(1 for r in results if r)
    requests = calls.api_requests + history
    return {
        "approach": approach,
        "n": n,
        "max_in_flight": max_in_flight if approach == "batch" else None,
        "completed": completed,
        "jobs_created": created,
        "errors": errors[:10],
        "triggers_total": triggerer["triggers_total"],
        "triggers_held_max": triggerer["triggers_held_max"],
        "deferrals": deferrals,
        "max_stall_ms": triggerer["max_stall_ms"],
        "gc_longest_ms": triggerer["gc_longest_ms"],
        "triggerer_cpu_s": triggerer["cpu_s"],
        "triggerer_rss_growth_mb": triggerer["rss_growth_mb"],
        "triggerer_peak_rss_mb": triggerer["peak_rss_mb"],
        "requests": requests,
        "submits": calls.submit,
        "status_polls": calls.status,
        "result_fetches": calls.result,
        "history_pages": history,
        "throttled": calls.throttled,
        "requests_per_image": requests / n if n else 0.0,
        "wall_s": wall,
    }


COLUMNS = [
    ("approach", "approach"),
    ("N", "n"),
    ("completed", "completed"),
    ("triggers", "triggers_total"),
    ("held at once", "triggers_held_max"),
    ("stall ms", "max_stall_ms"),
    ("longest GC ms", "gc_longest_ms"),
    ("triggerer CPU s", "triggerer_cpu_s"),
    ("triggerer RSS +MB", "triggerer_rss_growth_mb"),
    ("req/image", "requests_per_image"),
    ("polls", "status_polls"),
    ("history", "history_pages"),
    ("wall s", "wall_s"),
]


def table(rows: list[dict[str, Any]]) -> str:
    return markdown_table([c for c, _ in COLUMNS], [[r.get(k) for _, k in COLUMNS] for r in rows])


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the batch should show against the same campaign as one trigger per image."""
    by = {r["approach"]: r for r in rows}
    batch, each = by.get("batch"), by.get("triggers")
    if batch is None:
        return []
    n = batch["n"]
    checks = [
        (
            "batch: every image made, each paid once",
            batch["completed"] == n == batch["jobs_created"],
            f"{batch['completed']}/{n} completed, {batch['jobs_created']} jobs created",
        ),
        (
            "batch: one trigger at a time",
            batch["triggers_held_max"] == 1,
            f"{batch['triggers_held_max']} held at once, {batch['triggers_total']} in all",
        ),
    ]
    if each is not None:
        for name, key in (
            ("triggerer CPU", "triggerer_cpu_s"),
            ("triggerer RSS growth", "triggerer_rss_growth_mb"),
            ("longest loop stall", "max_stall_ms"),
        ):
            checks.append(
                (
                    f"batch: {name} below the per-image triggers'",
                    batch[key] < each[key],
                    f"{batch[key]:.2f} vs {each[key]:.2f}",
                )
            )
    return [{"target": t, "met": ok, "measured": m} for t, ok, m in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="images in the campaign")
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument(
        "--max-in-flight", type=int, default=10_000, help="the batch operator's max_in_flight"
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="emulator time scale (< 1 for smoke runs)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per approach, seconds")
    parser.add_argument("--name", default="campaign")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    info = machine()
    rows = []
    for approach in [a for a in args.approaches.split(",") if a]:
        print(f"-- {approach} N={args.n} ...", flush=True)
        rows.append(run_approach(approach, args.n, args.time_scale, args.max_in_flight, args.timeout))
        print(table(rows[-1:]), flush=True)
    print("\n" + table(rows))
    payload = report("campaign", argv, info, rows, table(rows), targets(rows))
    print(f"results: {write_json(args.name, payload, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
