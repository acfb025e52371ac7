"""A burst of ``SegmindRequestTrigger`` s in one triggerer loop, this code beside another commit's.

Issue 22 item 4. Three cases, each in a fresh client process against a fresh emulator process
(``flux-1.1-pro``, 14.05 s +/- 20 %):

- ``unlimited``: N jobs (default 2,000) are submitted evenly over 15 s (a bare aiohttp session, as
  workers would), then N triggers are created at once in one event loop, the way Airflow's
  triggerer does (``create_triggers``: one ``asyncio.sleep(0)`` between two, each ``run()`` a task
  that consumes every event): a backlog, whose oldest jobs' first polls are already due. Real
  time; the result fetches (the workers') come after. Measured: the longest loop stall while the
  triggers run (Airflow warns at 200 ms) with the loop thread's own CPU over it (a process waiting
  for a core looks the same to the watchdog), and the detection latency: the trigger's event minus
  the job's end on the emulator, or minus the trigger's start for a job that ended before it.
- ``limited``: a 50-per-minute key (time-scaled like the emulator: 500 per real minute at 0.1), set
  on the connection and enforced by the emulator. Eight submitters keep it saturated through the
  hook (its budget); each answer starts its trigger in the same loop, each event fetches its result
  through the hook. Measured: requests per job (submits + status polls + result fetches, from the
  emulator's log) and 429s.
- ``pool``: the same key with four submitters that each wait for their job's result before the next
  submit, as tasks in an Airflow pool sized by docs/hook.md's rule do (bench/throughput.py's case).

Time-scaled cases give the trigger the model's duration, scaled (the emulator reports inference
times on its own clock, so nothing is learned), as bench/throughput.py does.

``--baseline REF`` runs the same cases on the package as it is at commit REF (``git archive`` into a
temporary directory, first on the client's ``PYTHONPATH``), so both rows come from one session, and
prints this code's figures over the baseline's.

Usage: ``python bench/trigger_burst.py --baseline REF`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MODEL,
    PROMPT,
    REPO_ROOT,
    CallCounts,
    GcPauses,
    LoopWatchdog,
    add_run_args,
    machine,
    markdown_table,
    percentile,
    report,
    start_emulator,
    write_json,
)

CASES = ("unlimited", "limited", "pool")
CONN_ID = "segmind_bench"
API_KEY = "bench-burst-key"
LATENCY = 14.05
JITTER = 0.2
SUBMIT_CONNECTIONS = 64
SUBMIT_OVER = 15.0
"""The unlimited case's submits span this long (seconds, scaled): 2,000 sync submits one after another
take about that here, so a quarter of the burst's first polls are due when the triggers start."""
LIMITED_SUBMITTERS = 8
"""Workers submitting on the limited key: more than its budget lets through, so it stays saturated."""
POOL_SLOTS = 4
"""The ``pool`` case's slots: ceil(50 / 3 requests x 14 s / 60), the rule in docs/hook.md."""
DEADLINE = 900.0
STALL_TARGET_MS = 200.0
P99_TARGET_S = 2.0
REQUESTS_TARGET = 3.5


# --------------------------------------------------------------------------- client side (child process)


class BusyWatchdog(LoopWatchdog):
    """The loop watchdog, also noting the loop thread's own CPU time over each late tick.

    On a shared machine a process waiting for a core looks to the watchdog like a blocked loop;
    the CPU the thread spent over the longest stall tells the two apart (Airflow warns on the wall
    time, which is the headline figure).
    """

    def __init__(self) -> None:
        super().__init__()
        self.max_stall_cpu = 0.0
        self.max_busy = 0.0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.interval)
            late = max(0.0, loop.time() - before - self.interval)
            busy = time.thread_time() - cpu
            self.stalls.append(late)
            self.max_busy = max(self.max_busy, busy)
            if late > self.max_stall:
                self.max_stall, self.max_stall_cpu = late, busy


class Burst:
    """One case in this process: the jobs, their triggers, and what was noticed when."""

    def __init__(self, url: str, scale: float) -> None:
        self.url = url
        self.scale = scale
        self.noticed: dict[str, tuple[float, float, float]] = {}
        self.polls: list[int] = []
        self.outcomes: dict[str, int] = {}
        self.errors: list[str] = []
        self.hook: Any = None
        self.stall_s = self.stall_cpu_s = self.busy_s = self.gc_longest_s = 0.0

    @contextlib.asynccontextmanager
    async def measured(self) -> AsyncIterator[None]:
        """The loop watchdog and the garbage collector's timer around the triggers' phase."""
        watchdog, pauses = BusyWatchdog(), GcPauses()
        watchdog.start()
        pauses.start()
        try:
            yield
        finally:
            pauses.stop()
            self.stall_s = await watchdog.stop()
            self.stall_cpu_s, self.busy_s = watchdog.max_stall_cpu, watchdog.max_busy
            self.gc_longest_s = pauses.longest

    async def setup(self, session: aiohttp.ClientSession) -> None:
        """What a running triggerer has before the burst: its heap, the connection, a warm session."""
        import airflow.jobs.triggerer_job_runner  # noqa: F401  (a triggerer's heap)

        from segmind_provider.hooks.segmind import SegmindHook

        self.hook = SegmindHook(CONN_ID)
        warm = await self._post(session)
        await self.hook.aget_status(warm["request_id"])
        async with session.delete(f"{self.url}/_emulator/calls") as resp:
            resp.raise_for_status()

    async def _post(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.post(
            f"{self.url}/v2/{MODEL}", json={"prompt": PROMPT}, headers={"x-api-key": API_KEY}
        ) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        return body

    def trigger(self, request_id: str, sent: float) -> Any:
        from segmind_provider.triggers.segmind import SegmindRequestTrigger

        return SegmindRequestTrigger(
            request_id=request_id,
            segmind_conn_id=CONN_ID,
            end_time=time.time() + DEADLINE * self.scale,
            model=MODEL,
            submitted_at=sent,
            # Time-scaled, the emulator reports inference_time on its own clock: give the model's
            # typical duration, scaled like the emulator (as bench/throughput.py does), instead of learning.
            expected_duration=None if self.scale == 1.0 else LATENCY * self.scale,
        )

    async def wait(self, trigger: Any, fetch: bool) -> None:
        """Airflow's ``run_trigger``: every event consumed, the first kept; then, with ``fetch``, the
        worker's result fetch (on a limited key it spends the same budget)."""
        event: Any = None
        noticed = 0.0
        started = time.time()
        try:
            async for fired in trigger.run():
                if event is None:
                    event, noticed = fired.payload, time.time()
            if event is None:
                raise RuntimeError("trigger ended without an event")
            status = str(event["status"])
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
            self.polls.append(int(event.get("polls") or 0))
            if status == "success":
                self.noticed[trigger.request_id] = (started, noticed, float(event["inference_time"]))
                if fetch:
                    await self.hook.aget_result(trigger.request_id)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])


async def _unlimited(burst: Burst, session: aiohttp.ClientSession, n: int, spread: float) -> None:
    """Submit N jobs evenly over ``spread`` seconds, then create every trigger at once.

    That is a triggerer picking up a backlog (a restart, a busy loop): the earliest jobs' first
    polls are already due when their triggers start.
    """
    started = time.time()

    async def submit(i: int) -> tuple[str, float]:
        await asyncio.sleep(max(0.0, started + spread * i / n - time.time()))
        sent = time.time()
        body = await burst._post(session)
        return str(body["request_id"]), sent

    jobs = await asyncio.gather(*(submit(i) for i in range(n)))
    gc.collect()
    tasks = []
    async with burst.measured():
        for request_id, sent in jobs:
            await asyncio.sleep(0)
            tasks.append(asyncio.create_task(burst.wait(burst.trigger(request_id, sent), fetch=False)))
        await asyncio.gather(*tasks)
    # The workers' result fetches, after the triggers' phase (they are not the triggerer's work), so
    # requests per job are whole.
    await asyncio.gather(*(burst.hook.aget_result(request_id) for request_id in burst.noticed))


async def _limited(burst: Burst, n: int, slots: int) -> None:
    """Submitters go through the hook (its budget); each answer starts its trigger in this loop.

    Without ``slots`` they submit as fast as the key lets them (a burst: the submits wait for
    tokens); with ``slots`` each of that many submitters waits for its job and its result before
    the next submit, as tasks in an Airflow pool of that size do (``docs/hook.md`` sizes it).
    """
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(slots or LIMITED_SUBMITTERS)
    jobs = iter(range(n))
    tasks: list[asyncio.Task[None]] = []

    def submit(i: int) -> tuple[str, float]:
        # The submit waits for the budget first: its answer's time anchors the wait, as the operator's does.
        request_id = str(burst.hook.submit(MODEL, {"prompt": PROMPT, "seed": i})["request_id"])
        return request_id, time.time()

    async def submitter() -> None:
        for i in jobs:
            try:
                request_id, sent = await loop.run_in_executor(pool, submit, i)
            except Exception as exc:
                burst.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            task = loop.create_task(burst.wait(burst.trigger(request_id, sent), fetch=True))
            tasks.append(task)
            if slots:
                await task

    async with burst.measured():
        await asyncio.gather(*(submitter() for _ in range(slots or LIMITED_SUBMITTERS)))
        await asyncio.gather(*tasks)
    pool.shutdown()


async def run_client(case: str, url: str, n: int, scale: float, spread: float) -> dict[str, Any]:
    import segmind_provider

    burst = Burst(url, scale)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=SUBMIT_CONNECTIONS), timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        await burst.setup(session)
        started = time.time()
        if case == "unlimited":
            await _unlimited(burst, session, n, spread)
        else:
            await _limited(burst, n, POOL_SLOTS if case == "pool" else 0)
        wall = time.time() - started
    return {
        "package": str(Path(segmind_provider.__file__).resolve().parent.parent),
        "n": n,
        "outcomes": burst.outcomes,
        "noticed": burst.noticed,
        "polls": burst.polls,
        "max_stall_s": burst.stall_s,
        "max_stall_cpu_s": burst.stall_cpu_s,
        "max_busy_s": burst.busy_s,
        "gc_longest_s": burst.gc_longest_s,
        "wall_s": wall,
        "errors": burst.errors[:20],
        "error_count": len(burst.errors),
    }


# --------------------------------------------------------------------------- orchestration


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def package_at(ref: str) -> Iterator[Path]:
    """The repository's tree at ``ref`` in a temporary directory (its ``segmind_provider`` importable)."""
    with tempfile.TemporaryDirectory(prefix="trigger_burst_") as tmp:
        archive = Path(tmp) / "tree.tar"
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO_ROOT),
                "archive",
                "--format=tar",
                "-o",
                str(archive),
                ref,
                "segmind_provider",
            ],
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def run_one(
    case: str, n: int, scale: float, rpm: float | None, spread: float, timeout: float, path: Path | None
) -> dict[str, Any]:
    """Fresh emulator + fresh client process (on ``path``'s package when given); counts from the emulator."""
    limit = {"rate_limit": round(rpm / scale), "rate_limit_window": 60.0} if rpm else {}
    emu = start_emulator(time_scale=scale, workers=n + 64, **limit)
    try:
        emu.register_model(MODEL, latency=LATENCY, jitter=JITTER)
        extra: dict[str, Any] = {"timeout": 60, "time_scale": scale}
        if rpm:
            extra["requests_per_minute"] = round(rpm / scale)
        env = dict(os.environ)
        env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "segmind", "host": emu.base_url, "password": API_KEY, "extra": extra}
        )
        if path is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "client.json"
            cmd = [sys.executable, __file__, "--client", case, "--url", emu.base_url, "--out", str(out)]
            cmd += ["--n", str(n), "--time-scale", str(scale), "--submit-over", str(spread * scale)]
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True, cwd=tmp)
            if proc.returncode != 0:
                raise RuntimeError(f"{case} client failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            client = json.loads(out.read_text())
        calls = CallCounts.from_calls(emu.calls())
        created_at = {r["request_id"]: _epoch(r["created_at"]) for r in emu.requests(MODEL)}
        created = int(emu.stats()["submitted"]) - 1  # the warm-up job
    finally:
        emu.stop()
    # Detection: the trigger's event minus the job's end on the emulator (its receipt of the submit,
    # to the millisecond, plus the drawn seconds it reports as inference_time), or minus the trigger's
    # start when the job ended before its trigger existed (the backlog's oldest jobs).
    latencies = [
        (noticed - max(created_at[rid] + inference * scale, started)) / scale
        for rid, (started, noticed, inference) in client["noticed"].items()
    ]
    completed = client["outcomes"].get("success", 0)
    return {
        "case": case,
        "n": n,
        "package": client["package"],
        "completed": completed,
        "jobs_created": created,
        "outcomes": client["outcomes"],
        "submits": calls.submit,
        "status_polls": calls.status,
        "result_fetches": calls.result,
        "throttled": calls.throttled,
        "polls_per_job": calls.status / n,
        "requests_per_job": calls.api_requests / n,
        "detect_p50_s": percentile(latencies, 50),
        "detect_p99_s": percentile(latencies, 99),
        "detect_max_s": max(latencies) if latencies else float("nan"),
        "max_stall_ms": client["max_stall_s"] * 1000,
        "max_stall_cpu_ms": client["max_stall_cpu_s"] * 1000,
        "max_busy_ms": client["max_busy_s"] * 1000,
        "gc_longest_ms": client["gc_longest_s"] * 1000,
        "wall_s": client["wall_s"],
        "errors": client["errors"],
        "error_count": client["error_count"],
    }


COLUMNS = [
    ("code", "code"),
    ("case", "case"),
    ("N", "n"),
    ("completed", "completed"),
    ("req/job", "requests_per_job"),
    ("polls/job", "polls_per_job"),
    ("429s", "throttled"),
    ("detect p50 s", "detect_p50_s"),
    ("p99 s", "detect_p99_s"),
    ("max s", "detect_max_s"),
    ("stall ms", "max_stall_ms"),
    ("its CPU ms", "max_stall_cpu_ms"),
    ("busiest tick CPU ms", "max_busy_ms"),
    ("longest GC ms", "gc_longest_ms"),
    ("wall s", "wall_s"),
]
RATIOS = [("req/job", "requests_per_job"), ("p99", "detect_p99_s"), ("stall", "max_stall_ms")]


def ratios(rows: list[dict[str, Any]]) -> str:
    """This code over the baseline, per case: below 1 is better for all three."""
    lines = []
    for case in CASES:
        ours = next((r for r in rows if r["case"] == case and r["code"] == "this code"), None)
        base = next((r for r in rows if r["case"] == case and r["code"] != "this code"), None)
        if ours and base:
            parts = [f"{label} {ours[key] / base[key]:.2f}x" for label, key in RATIOS if base[key]]
            lines.append(f"{case}: this code / {base['code']}: " + ", ".join(parts))
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 22's targets, for every row (the baseline's say what today's code misses)."""
    checks: list[dict[str, Any]] = []
    for r in rows:
        tag = f"{r['code']}, {r['case']} N={r['n']}"
        checks.append(
            {
                "target": f"{tag}: every job completes once",
                "met": r["completed"] == r["n"] == r["jobs_created"] and r["error_count"] == 0,
                "measured": f"{r['completed']}/{r['n']}, {r['jobs_created']} created, {r['error_count']} errors",
            }
        )
        if r["case"] == "unlimited":
            checks.append(
                {
                    "target": f"{tag}: longest stall < {STALL_TARGET_MS:.0f} ms",
                    "met": r["max_stall_ms"] < STALL_TARGET_MS,
                    "measured": f"{r['max_stall_ms']:.0f} ms",
                }
            )
            checks.append(
                {
                    "target": f"{tag}: detection p99 <= {P99_TARGET_S} s",
                    "met": r["detect_p99_s"] <= P99_TARGET_S,
                    "measured": f"{r['detect_p99_s']:.2f} s",
                }
            )
        else:
            checks.append(
                {
                    "target": f"{tag}: <= {REQUESTS_TARGET} requests per job, no 429",
                    "met": r["requests_per_job"] <= REQUESTS_TARGET and r["throttled"] == 0,
                    "measured": f"{r['requests_per_job']:.2f}, {r['throttled']} 429s",
                }
            )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="triggers in the unlimited burst")
    parser.add_argument("--limited-n", type=int, default=100, help="jobs on the limited key")
    parser.add_argument("--rpm", type=float, default=50.0, help="the limited key's requests per minute")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the unlimited case's time scale")
    parser.add_argument("--limited-time-scale", type=float, default=0.1, help="the limited case's time scale")
    parser.add_argument(
        "--submit-over", type=float, default=SUBMIT_OVER, help="seconds the unlimited case's submits span"
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--baseline", help="a git ref: run the same cases on the package at that commit")
    parser.add_argument("--timeout", type=float, default=1200.0, help="per client process, seconds")
    add_run_args(parser, "trigger_burst", CASES)
    args = parser.parse_args(argv)
    if args.client:
        result = asyncio.run(run_client(args.client, args.url, args.n, args.time_scale, args.submit_over))
        args.out.write_text(json.dumps(result))
        return 0

    info = machine()
    cases = [c for c in args.cases.split(",") if c]
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        codes: list[tuple[str, Path | None]] = []
        if args.baseline:
            codes.append((f"baseline {args.baseline}", stack.enter_context(package_at(args.baseline))))
        codes.append(("this code", None))
        for case in cases:
            n = args.n if case == "unlimited" else args.limited_n
            scale = args.time_scale if case == "unlimited" else args.limited_time_scale
            rpm = None if case == "unlimited" else args.rpm
            for code, path in codes:
                print(f"-- {code}: {case} N={n} ...", flush=True)
                row = {"code": code, **run_one(case, n, scale, rpm, args.submit_over, args.timeout, path)}
                row["time_scale"] = scale
                rows.append(row)
                print(markdown_table([c for c, _ in COLUMNS], [[row.get(k) for _, k in COLUMNS]]), flush=True)
    text = markdown_table([c for c, _ in COLUMNS], [[r.get(k) for _, k in COLUMNS] for r in rows])
    print("\n" + text)
    side_by_side = ratios(rows)
    if side_by_side:
        print(side_by_side)
    payload = report("trigger_burst", argv, info, rows, text, targets(rows))
    payload["ratios"] = side_by_side
    print(f"results: {write_json(args.name, payload, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
