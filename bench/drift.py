"""A burst of slow jobs after quick ones: status polls per job, fresh process vs one that learned.

Issue 13 measured, with an independent stand-in, 2,000 ``flux-1.1-pro`` jobs of ~14 s costing 1.5 status
polls each in a fresh process but 4.2 each after the same process had completed 30 jobs of 1.5 s
(default ``poll_interval``). This bench runs that scenario against the emulator, each case in a fresh
client process with its own emulator, the burst's jobs as real ``SegmindRequestTrigger`` s in one event
loop (16 submitters, as workers would submit):

- ``fresh``: the burst alone;
- ``after small``: first 30 quick jobs that ask for small images (256x256), then the burst at the
  default size. The emulator's latency does not depend on size, so the bench sets ``flux-1.1-pro`` to
  1.5 s for the quick jobs and back to 14.05 s for the burst (admin API);
- ``after same``: first 30 quick jobs with the burst's own payload (the service was quick, then slow).

Polls per job count the burst's status calls in the emulator's log. Target: at most 0.5 more polls
per job than ``fresh``.

Usage: ``python bench/drift.py`` (= ``--burst 2000``; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MODEL,
    PROMPT,
    CallCounts,
    add_run_args,
    machine,
    markdown_table,
    model_latency,
    report,
    start_emulator,
    write_json,
)

CASES = ("fresh", "after small", "after same")
CONN_ID = "segmind_bench"
API_KEY = "bench-drift-key"
SUBMITTERS = 16
QUICK_JOBS = 30
QUICK_SECONDS = 1.5
SMALL = {"aspect_ratio": "custom", "width": 256, "height": 256}
TARGET_EXTRA_POLLS = 0.5


async def _jobs(url: str, payloads: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    """Submit every payload (bare session, 16 at a time); each answer starts its trigger as a task."""
    from segmind_provider.triggers.segmind import SegmindRequestTrigger

    takes_workload = "workload" in inspect.signature(SegmindRequestTrigger).parameters
    if takes_workload:
        from segmind_provider.triggers.workload import workload
    events: list[dict[str, Any]] = []
    tasks: list[asyncio.Task[None]] = []
    queue = iter(payloads)

    async def wait(request_id: str, sent: float, payload: dict[str, Any]) -> None:
        extra = {"workload": workload(MODEL, payload)} if takes_workload else {}
        trigger = SegmindRequestTrigger(
            request_id=request_id,
            segmind_conn_id=CONN_ID,
            end_time=time.time() + 900,
            model=MODEL,
            submitted_at=sent,
            time_scale=scale,
            **extra,
        )
        async for event in trigger.run():
            events.append(event.payload)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SUBMITTERS)) as session:

        async def submitter() -> None:
            for payload in queue:
                sent = time.time()
                async with session.post(
                    f"{url}/v2/{MODEL}", json=payload, headers={"x-api-key": API_KEY}
                ) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                tasks.append(asyncio.get_running_loop().create_task(wait(body["request_id"], sent, payload)))

        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        await asyncio.gather(*tasks)
    return events


async def _warm() -> None:
    """What any process has done before its first job (imports, the connection), learning nothing."""
    from segmind_provider.hooks.segmind import SegmindHook
    from segmind_provider.triggers.segmind import SegmindRequestTrigger  # noqa: F401

    await SegmindHook(CONN_ID).aget_settings()


def run_case(case: str, url: str, burst: int, scale: float) -> dict[str, Any]:
    """One case in this (fresh) process: the quick jobs if any, then the burst; polls from the log."""
    from segmind_provider.testing.emulator.control import EmulatorControl

    asyncio.run(_warm())
    control = EmulatorControl(url)
    latency, jitter = model_latency(control)
    if case != "fresh":
        control.register_model(MODEL, latency=QUICK_SECONDS)
        quick = {"prompt": PROMPT, **(SMALL if case == "after small" else {})}
        asyncio.run(_jobs(url, [dict(quick, seed=i) for i in range(QUICK_JOBS)], scale))
        control.register_model(MODEL, latency=latency, jitter=jitter)
    control.clear_calls()
    started = time.time()
    events = asyncio.run(_jobs(url, [{"prompt": PROMPT, "seed": i} for i in range(burst)], scale))
    wall = time.time() - started
    calls = CallCounts.from_calls(control.calls())
    completed = sum(1 for e in events if e.get("status") == "success")
    return {
        "case": case,
        "burst": burst,
        "completed": completed,
        "status_polls": calls.status,
        "polls_per_job": calls.status / burst,
        "wall_s": wall,
    }


def _client(case: str, url: str, burst: int, scale: float, out: Path) -> None:
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "segmind",
            "host": url,
            "password": API_KEY,
            "extra": {"timeout": 60, "time_scale": scale},
        }
    )
    out.write_text(json.dumps(run_case(case, url, burst, scale)))


def run_fresh_process(case: str, burst: int, scale: float, timeout: float) -> dict[str, Any]:
    emu = start_emulator(time_scale=scale, workers=burst + 64)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "case.json"
            cmd = [sys.executable, __file__, "--client", case, "--url", emu.base_url, "--out", str(out)]
            cmd += ["--burst", str(burst), "--time-scale", str(scale)]
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{case} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            return dict(json.loads(out.read_text()))
    finally:
        emu.stop()


COLUMNS = [
    ("case", "case"),
    ("burst", "burst"),
    ("completed", "completed"),
    ("status polls", "status_polls"),
    ("polls/job", "polls_per_job"),
    ("vs fresh", "extra_polls"),
    ("wall s", "wall_s"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="emulator time scale (< 1 for smoke runs)"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    add_run_args(parser, "drift", CASES)
    args = parser.parse_args(argv)
    if args.client:
        _client(args.client, args.url, args.burst, args.time_scale, args.out)
        return 0

    info = machine()
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        print(f"-- {case} ...", flush=True)
        rows.append(run_fresh_process(case, args.burst, args.time_scale, args.timeout))
    fresh = next((r["polls_per_job"] for r in rows if r["case"] == "fresh"), None)
    for row in rows:
        row["extra_polls"] = None if fresh is None else row["polls_per_job"] - fresh
    text = markdown_table([c for c, _ in COLUMNS], [[r.get(k) for _, k in COLUMNS] for r in rows])
    print(text)
    checks = [
        {
            "target": f"{r['case']}: at most {TARGET_EXTRA_POLLS} more status polls per job than fresh",
            "met": r["extra_polls"] <= TARGET_EXTRA_POLLS,
            "measured": f"{r['polls_per_job']:.2f} vs {fresh:.2f} ({r['extra_polls']:+.2f})",
        }
        for r in rows
        if r["case"] != "fresh" and r["extra_polls"] is not None and fresh is not None
    ]
    payload = report("drift", argv, info, rows, text, checks)
    print(f"results: {write_json(args.name, payload, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
