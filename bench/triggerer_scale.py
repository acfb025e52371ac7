"""How many Segmind waits one triggerer event loop holds: N ``SegmindRequestTrigger`` s at once.

Each approach runs in a fresh client process against a fresh emulator process (unlimited key, real
time: ``flux-1.1-pro`` takes its documented ~14 s, jittered), so CPU, RSS and sockets belong to that
approach alone. Every client process first imports what a triggerer has loaded
(``airflow.jobs.triggerer_job_runner``), so every approach's loop carries the same heap. The
process plays the triggerer: ``SUBMITTERS`` coroutines stand in for the workers (a bare aiohttp
session, the same for every approach) and, as each submit is answered, start the wait as one task,
the way the triggerer starts ``run_trigger`` for a deferred task; when the wait ends the same task
fetches the result (the worker's ``execute_complete``). The wait differs:

- ``trigger``: the real ``SegmindRequestTrigger``, run the way Airflow's triggerer runs it (each
  ``run()`` an asyncio task, every event counted, the first one taken), result via the async hook;
- ``naive``: a trigger that polls with ``requests`` in ``asyncio.to_thread`` every 1 s;
- ``floor``: a bare aiohttp client that knows each job's completion time (asked from the emulator's
  control plane, not counted as an API request) and spends exactly submit + 1 status + 1 result.

Usage: ``python bench/triggerer_scale.py --n 100,1000,10000`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    IMG_DIR,
    MODEL,
    PROMPT,
    CallCounts,
    GcPauses,
    LoopWatchdog,
    PlotPoint,
    ProcessSampler,
    cpu_seconds,
    machine,
    markdown_table,
    oracle_duration,
    percentile,
    plot_requests_vs_latency,
    start_emulator,
    write_json,
)

APPROACHES = ("trigger", "naive", "floor")
CONN_ID = "segmind_bench"
API_KEY = "bench-scale-key"
SUBMITTERS = 16
"""Submits in flight at once (one bare aiohttp session): they stand in for the workers that submit."""
NAIVE_INTERVAL = 1.0
DEADLINE = 900.0
DEFAULT_POLL_INTERVAL = 5.0
"""The trigger's default longest gap (``triggers.polling.DEFAULT_POLL_INTERVAL``), scaled with time."""
TYPICAL_SECONDS = 14.0


# --------------------------------------------------------------------------- client side (child process)


class NaivePollTrigger:
    """The first thing one writes: blocking ``requests`` in a thread, a fixed 1 s sleep, no pooling."""

    def __init__(self, status_url: str, api_key: str, interval: float = NAIVE_INTERVAL) -> None:
        self.status_url = status_url
        self.api_key = api_key
        self.interval = interval

    async def run(self) -> AsyncIterator[dict[str, Any]]:
        polls = 0
        while True:
            resp = await asyncio.to_thread(
                requests.get, self.status_url, headers={"x-api-key": self.api_key}, timeout=60
            )
            polls += 1
            body = resp.json()
            if body.get("status") in ("COMPLETED", "FAILED"):
                yield {
                    "status": "success" if body["status"] == "COMPLETED" else "failed",
                    "inference_time": (body.get("metrics") or {}).get("inference_time"),
                    "polls": polls,
                }
                return
            await asyncio.sleep(self.interval)


async def _drain(events: AsyncIterator[Any]) -> tuple[Any, float, int]:
    """Consume every event, keep the first and when it came (the naive trigger's ``run_trigger``)."""
    first: Any = None
    first_at = 0.0
    count = 0
    async for event in events:
        count += 1
        if first is None:
            first, first_at = event, time.time()
    return first, first_at, count


class Client:
    """One approach, one run: per job submit, wait, fetch the result; notes when each end was seen."""

    def __init__(self, approach: str, url: str, scale: float = 1.0) -> None:
        self.approach = approach
        self.url = url
        self.scale = scale
        self.headers = {"x-api-key": API_KEY}
        self.latencies: list[float] = []
        self.completed = 0
        self.not_completed: dict[str, int] = {}
        self.duplicated = 0
        self.errors: list[str] = []
        self.session: aiohttp.ClientSession | None = None
        # Like the triggerer's ``self.triggers``: the running waits, one task each, held until done.
        self.waits: set[asyncio.Task[None]] = set()
        self.ended = 0
        self.all_ended = asyncio.Event()
        self.n = 0
        self.hook: Any = None
        self.model_latency = (14.0, 0.15)

    async def setup(self) -> None:
        """Everything a process has before its first trigger: imports, sessions, one warm-up call each."""
        import airflow.jobs.triggerer_job_runner  # noqa: F401  (a triggerer's heap, for every approach)

        # No client timeout: its timer would outlive each submit in the loop's heap, a cost a real
        # triggerer (whose workers submit) does not carry.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=SUBMITTERS), timeout=aiohttp.ClientTimeout(total=None)
        )
        warm, _, _ = await self._submit()
        if self.approach == "trigger":
            from segmind_provider.hooks.segmind import SegmindHook
            from segmind_provider.triggers.segmind import SegmindRequestTrigger  # noqa: F401

            self.hook = SegmindHook(CONN_ID)
            await self.hook.aget_status(warm["request_id"])
        elif self.approach == "naive":
            await asyncio.to_thread(requests.get, warm["status_url"], headers=self.headers, timeout=60)
        else:
            async with self.session.get(f"{self.url}/_emulator/config") as resp:
                spec = (await resp.json())["models"][MODEL]
            self.model_latency = (float(spec["latency"]), float(spec["jitter"]))
        async with self.session.delete(f"{self.url}/_emulator/calls") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _submit(self) -> tuple[dict[str, Any], float, float]:
        """POST /v2/{model}; returns the answer and the times just before sending and after the answer."""
        assert self.session is not None
        sent = time.time()
        async with self.session.post(
            f"{self.url}/v2/{MODEL}", json={"prompt": PROMPT}, headers=self.headers
        ) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        return body, sent, time.time()

    async def run_jobs(self, n: int) -> None:
        """Submit ``n`` jobs through ``SUBMITTERS`` workers; each answer starts its wait as a task."""
        self.n = n
        if n <= 0:
            return
        jobs = iter(range(n))
        loop = asyncio.get_running_loop()

        async def submitter() -> None:
            for _ in jobs:
                try:
                    sub, sent, answered = await self._submit()
                except Exception as exc:
                    self._failed(exc)
                    continue
                self.waits.add(loop.create_task(self._wait(sub, sent, answered)))

        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        await self.all_ended.wait()

    def _ended(self) -> None:
        self.ended += 1
        if self.ended >= self.n:
            self.all_ended.set()

    def _failed(self, exc: Exception) -> None:
        self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        self._ended()

    def _finish(
        self, rid: str, status: str, sent: float, noticed: float, inference: Any, events: int
    ) -> None:
        if events > 1:
            self.duplicated += 1
        if status != "success":
            self.not_completed[status] = self.not_completed.get(status, 0) + 1
            return
        self.completed += 1
        if inference is not None:
            # The emulator finishes a job at its receipt of the submit + the drawn seconds; the
            # send time bounds that receipt from below, so this latency errs high by < one round trip.
            self.latencies.append((noticed - (sent + float(inference) * self.scale)) / self.scale)

    async def _wait(self, sub: dict[str, Any], sent: float, answered: float) -> None:
        """One deferred task's life in the triggerer: wait for the job, then fetch its result."""
        try:
            if self.approach == "trigger":
                await self._trigger_job(sub["request_id"], sent)
            elif self.approach == "naive":
                await self._naive_job(sub, sent)
            else:
                await self._floor_job(sub["request_id"], sent, answered)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            # Every wait ends exactly once, cancelled ones too, so run_jobs never hangs.
            self._ended()
            self.waits.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _trigger_job(self, rid: str, sent: float) -> None:
        from segmind_provider.triggers.segmind import SegmindRequestTrigger

        trigger = SegmindRequestTrigger(
            request_id=rid,
            segmind_conn_id=CONN_ID,
            poll_interval=DEFAULT_POLL_INTERVAL * self.scale,
            end_time=time.time() + DEADLINE,
            model=MODEL,
            submitted_at=sent,
            # Only when time-scaled (the smoke test): the model's default, scaled like the emulator.
            expected_duration=None if self.scale == 1.0 else TYPICAL_SECONDS * self.scale,
        )
        # What the triggerer's ``run_trigger`` does, inline (one frame per wait, like the triggerer's):
        # consume every event, keep the first and when it came.
        event: Any = None
        noticed = 0.0
        count = 0
        try:
            async for fired in trigger.run():
                count += 1
                if event is None:
                    event, noticed = fired, time.time()
        finally:
            await trigger.cleanup()
        payload = event.payload if event is not None else {"status": "no-event"}
        if payload["status"] == "success":
            await self.hook.aget_result(rid)
        self._finish(rid, payload["status"], sent, noticed, payload.get("inference_time"), count)

    async def _naive_job(self, sub: dict[str, Any], sent: float) -> None:
        naive = NaivePollTrigger(sub["status_url"], API_KEY, NAIVE_INTERVAL * self.scale)
        event, noticed, count = await _drain(naive.run())
        event = event or {"status": "no-event"}
        if event["status"] == "success":
            resp = await asyncio.to_thread(
                requests.get, sub["response_url"], headers=self.headers, timeout=60
            )
            resp.json()
        self._finish(sub["request_id"], event["status"], sent, noticed, event.get("inference_time"), count)

    async def _floor_job(self, rid: str, sent: float, answered: float) -> None:
        assert self.session is not None
        done_at = answered + oracle_duration(rid, *self.model_latency) * self.scale
        await asyncio.sleep(max(0.0, done_at - time.time()))
        while True:
            async with self.session.get(f"{self.url}/v2/requests/{rid}/status", headers=self.headers) as resp:
                body = await resp.json()
            if body.get("status") in ("COMPLETED", "FAILED"):
                break
            await asyncio.sleep(0.005 * self.scale)
        noticed = time.time()
        status = "success" if body["status"] == "COMPLETED" else "failed"
        if status == "success":
            async with self.session.get(f"{self.url}/v2/requests/{rid}", headers=self.headers) as resp:
                await resp.read()
        self._finish(rid, status, sent, noticed, (body.get("metrics") or {}).get("inference_time"), 1)


async def run_client(
    approach: str, url: str, n: int, scale: float = 1.0, freeze: bool = False
) -> dict[str, Any]:
    """One approach, N jobs, one event loop; measures only this process."""
    client = Client(approach, url, scale)
    await client.setup()
    gc.collect()
    if freeze:
        gc.freeze()
    sampler = ProcessSampler()
    watchdog = LoopWatchdog()
    pauses = GcPauses()
    sampler.start()
    watchdog.start()
    pauses.start()
    cpu0, t0 = cpu_seconds(), time.time()
    await client.run_jobs(n)
    cpu1, t1 = cpu_seconds(), time.time()
    pauses.stop()
    stall = await watchdog.stop()
    sampler.stop()
    await client.close()
    return {
        "approach": approach,
        "n": n,
        "completed": client.completed,
        "not_completed": client.not_completed,
        "duplicated": client.duplicated,
        "latencies": client.latencies,
        "cpu_s": cpu1 - cpu0 - sampler.cpu_used,
        "wall_s": t1 - t0,
        "baseline_rss": sampler.baseline_rss,
        "peak_rss": sampler.peak_rss,
        "peak_sockets": sampler.peak_sockets,
        "max_stall_s": stall,
        "gc_longest_s": pauses.longest,
        "gc_full_passes": pauses.full_passes,
        "errors": client.errors[:20],
        "error_count": len(client.errors),
    }


# --------------------------------------------------------------------------- orchestration


def _connection_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "segmind", "host": url, "password": API_KEY, "extra": {"timeout": 60}}
    )
    return env


def run_one(
    approach: str, n: int, timeout: float, scale: float = 1.0, freeze: bool = False
) -> dict[str, Any]:
    """Fresh emulator process + fresh client process; the request counts come from the emulator's log."""
    emu = start_emulator(time_scale=scale, workers=n + 64)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "client.json"
            cmd = [sys.executable, __file__, "--client", approach, "--n", str(n), "--url", emu.base_url]
            cmd += ["--out", str(out), "--time-scale", str(scale)] + (["--gc-freeze"] if freeze else [])
            proc = subprocess.run(
                cmd, env=_connection_env(emu.base_url), timeout=timeout, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{approach} client failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            client = json.loads(out.read_text())
        calls = CallCounts.from_calls(emu.calls())
        jobs_created = int(emu.stats()["submitted"])
    finally:
        emu.stop()
    return summarise(client, calls, jobs_created - 1)


def summarise(client: dict[str, Any], calls: CallCounts, jobs_created: int) -> dict[str, Any]:
    n = client["n"]
    latencies = client["latencies"]
    return {
        "approach": client["approach"],
        "n": n,
        "completed": client["completed"],
        "lost": n - client["completed"],
        "not_completed": client["not_completed"],
        "duplicated": client["duplicated"],
        "jobs_created": jobs_created,
        "requests": calls.api_requests,
        "submits": calls.submit,
        "status_polls": calls.status,
        "result_fetches": calls.result,
        "throttled": calls.throttled,
        "requests_per_job": calls.api_requests / n if n else 0.0,
        "cpu_s": client["cpu_s"],
        "cpu_s_per_1000": client["cpu_s"] / n * 1000 if n else 0.0,
        "wall_s": client["wall_s"],
        "rss_per_job_kb": (client["peak_rss"] - client["baseline_rss"]) / n / 1024 if n else 0.0,
        "peak_rss_mb": client["peak_rss"] / 2**20,
        "baseline_rss_mb": client["baseline_rss"] / 2**20,
        "peak_sockets": client["peak_sockets"],
        "max_stall_ms": client["max_stall_s"] * 1000,
        "gc_longest_ms": client["gc_longest_s"] * 1000,
        "gc_full_passes": client["gc_full_passes"],
        "detect_p50_s": percentile(latencies, 50),
        "detect_p99_s": percentile(latencies, 99),
        "detect_max_s": max(latencies) if latencies else float("nan"),
        "errors": client["errors"],
        "error_count": client["error_count"],
    }


COLUMNS = [
    ("approach", "approach"),
    ("N", "n"),
    ("completed", "completed"),
    ("lost", "lost"),
    ("dup", "duplicated"),
    ("req/job", "requests_per_job"),
    ("CPU s/1k jobs", "cpu_s_per_1000"),
    ("RSS KB/job", "rss_per_job_kb"),
    ("sockets", "peak_sockets"),
    ("detect p50 s", "detect_p50_s"),
    ("p99 s", "detect_p99_s"),
    ("max s", "detect_max_s"),
    ("stall ms", "max_stall_ms"),
    ("longest GC ms", "gc_longest_ms"),
    ("wall s", "wall_s"),
]


def table(rows: list[dict[str, Any]]) -> str:
    """Skipped runs stay in the table, saying why, so a gap is never mistaken for a result."""
    cells = []
    for r in rows:
        if r.get("skipped"):
            cells.append([f"{r['approach']} ({r['skipped']})", r["n"]] + [None] * (len(COLUMNS) - 2))
        else:
            cells.append([r.get(k) for _, k in COLUMNS])
    return markdown_table([c for c, _ in COLUMNS], cells)


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets for the trigger at the largest N, each measured against the same run."""
    ours = [r for r in rows if r["approach"] == "trigger" and not r.get("skipped")]
    if not ours:
        return []
    top = max(ours, key=lambda r: r["n"])
    naive = [r for r in rows if r["approach"] == "naive" and not r.get("skipped")]
    naive_cpu = max(naive, key=lambda r: r["n"])["cpu_s_per_1000"] if naive else None
    out: list[tuple[str, bool | None, str]] = [
        ("every job completes", top["completed"] == top["n"], f"{top['completed']}/{top['n']}"),
        (
            "none lost or duplicated",
            top["lost"] == 0 and top["duplicated"] == 0 and top["jobs_created"] == top["n"],
            f"lost {top['lost']}, duplicated events {top['duplicated']}, jobs created {top['jobs_created']}",
        ),
        ("<= 4 requests per job", top["requests_per_job"] <= 4, f"{top['requests_per_job']:.2f}"),
        (
            "CPU per 1,000 jobs <= 1/3 of naive",
            None if naive_cpu is None else top["cpu_s_per_1000"] <= naive_cpu / 3,
            f"{top['cpu_s_per_1000']:.2f} s vs naive {naive_cpu if naive_cpu is None else round(naive_cpu, 2)} s",
        ),
        ("longest loop stall < 50 ms", top["max_stall_ms"] < 50, f"{top['max_stall_ms']:.1f} ms"),
        ("<= 100 sockets", top["peak_sockets"] <= 100, str(top["peak_sockets"])),
        ("RSS per in-flight job <= 10 KB", top["rss_per_job_kb"] <= 10, f"{top['rss_per_job_kb']:.2f} KB"),
    ]
    return [(f"N={top['n']}: {name}", ok, measured) for name, ok, measured in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", default="100,1000,10000", help="comma-separated trigger counts")
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--naive-cap", type=int, default=1000, help="largest N the naive trigger is run at")
    parser.add_argument("--timeout", type=float, default=900.0, help="per client process, seconds")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulator time scale (1.0 = real 14 s jobs; < 1 for smoke runs)",
    )
    parser.add_argument("--name", default="triggerer_scale", help="results file bench/results/<name>.json")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "requests_vs_latency_scale.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() in each client after start-up (Airflow's triggerer does not; shows what stalls are made of)",
    )
    parser.add_argument("--client", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.client:
        result = asyncio.run(run_client(args.client, args.url, int(args.n), args.time_scale, args.gc_freeze))
        Path(args.out).write_text(json.dumps(result))
        return 0

    ns = [int(x) for x in args.n.split(",") if x]
    approaches = [a for a in args.approaches.split(",") if a]
    info = machine()
    rows: list[dict[str, Any]] = []
    for n in ns:
        for approach in approaches:
            if approach == "naive" and n > args.naive_cap:
                rows.append(
                    {"approach": approach, "n": n, "skipped": f"not run: capped at N={args.naive_cap}"}
                )
                print(f"-- {approach} N={n}: skipped (naive cap {args.naive_cap})", flush=True)
                continue
            print(f"-- {approach} N={n} ...", flush=True)
            row = run_one(approach, n, args.timeout, args.time_scale, args.gc_freeze)
            row["gc_freeze"] = args.gc_freeze
            rows.append(row)
            print(table([row]), flush=True)
    done = [r for r in rows if not r.get("skipped")]
    print("\n" + table(rows))
    checks = targets(rows)
    for name, ok, measured in checks:
        print(f"[{'MET' if ok else 'NOT MET' if ok is False else 'n/a'}] {name}: {measured}")
    payload = {
        "bench": "triggerer_scale",
        "command": "python bench/triggerer_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "targets": [{"target": t, "met": ok, "measured": m} for t, ok, m in checks],
        "table": table(rows),
    }
    path = write_json(args.name, payload, args.results_dir)
    print(f"results: {path}")
    if not args.no_plot and done:
        points = [
            PlotPoint(
                f"{r['approach']} N={r['n']}",
                r["requests_per_job"],
                r["detect_p50_s"],
                r["detect_p99_s"],
                r["approach"],
            )
            for r in done
        ]
        print(
            f"plot: {plot_requests_vs_latency(points, args.plot, 'Triggerer scale: requests per job vs detection latency')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
