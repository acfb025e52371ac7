"""How many status polls per second the emulator serves on one core.

The emulator runs in its own process pinned to one CPU; load comes from other
processes (aiohttp clients with many concurrent pollers). Two phases run side by
side: a small job table and a large one, to show a poll's cost does not grow with
the number of jobs. The server's own CPU time is read from /proc, so the figure
"polls per server CPU-second" holds even when the client is the bottleneck.

    python bench/emulator_throughput.py [--jobs 10000] [--concurrency 256] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

import aiohttp

from segmind_provider.testing.emulator import SegmindEmulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import process_cpu_seconds

KEY = {"x-api-key": "bench-key"}


async def submit_jobs(base_url: str, count: int) -> list[str]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=KEY) as session:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> str:
            async with sem, session.post(f"{base_url}/v2/flux-1.1-pro", json={"prompt": f"job {i}"}) as r:
                return str((await r.json())["status_url"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def poll(urls: list[str], concurrency: int, duration: float) -> tuple[int, int]:
    """Poll random status URLs with `concurrency` workers for `duration` seconds."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    done = errors = 0
    deadline = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=connector, headers=KEY) as session:

        async def worker(seed: int) -> None:
            nonlocal done, errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                async with session.get(rng.choice(urls)) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, errors


def client_main(urls: list[str], concurrency: int, duration: float, cpu: int | None, out: mp.Queue) -> None:  # type: ignore[type-arg]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    out.put(asyncio.run(poll(urls, concurrency, duration)))


def run_phase(
    emu: SegmindEmulator, jobs: int, args: argparse.Namespace, client_cpu: int | None
) -> dict[str, float]:
    emu.reset()
    urls = asyncio.run(submit_jobs(emu.base_url, jobs))
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    per_client = max(1, args.concurrency // args.clients)
    procs = [
        ctx.Process(target=client_main, args=(urls, per_client, args.duration, client_cpu, out))
        for _ in range(args.clients)
    ]
    assert emu.pid is not None
    cpu_before = process_cpu_seconds(emu.pid)
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=args.duration + 60) for _ in procs]
    elapsed = time.perf_counter() - started
    cpu_used = process_cpu_seconds(emu.pid) - cpu_before
    for p in procs:
        p.join()
    polls = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    stats = emu.stats()
    return {
        "jobs": jobs,
        "polls": polls,
        "errors": errors,
        "polls_per_s": polls / elapsed,
        "server_cpu_util": cpu_used / elapsed if cpu_used else float("nan"),
        "polls_per_server_cpu_s": polls / cpu_used if cpu_used else float("nan"),
        "renders": stats["renders"],
        "queued": stats["by_status"]["QUEUED"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the large phase")
    parser.add_argument("--small-jobs", type=int, default=100, help="jobs in the small phase")
    parser.add_argument("--concurrency", type=int, default=256, help="concurrent pollers in total")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of polling per phase")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[0] if cpus else None
    client_cpu = cpus[1] if len(cpus) > 1 else None
    print(
        f"python {sys.version.split()[0]}, cpus available {cpus}, server pinned to {server_cpu}, clients to {client_cpu}"
    )
    with SegmindEmulator(
        process=True,
        cpu_affinity=None if server_cpu is None else [server_cpu],
        time_scale=1.0,
        workers=32,
        call_log_size=1000,
    ) as emu:
        rows = [run_phase(emu, n, args, client_cpu) for n in (args.small_jobs, args.jobs)]
    print(
        f"{'jobs':>7} {'polls/s':>9} {'server CPU':>10} {'polls/CPU-s':>11} {'errors':>6} {'queued':>6} {'renders':>7}"
    )
    for r in rows:
        print(
            f"{r['jobs']:>7.0f} {r['polls_per_s']:>9.0f} {r['server_cpu_util']:>9.0%} "
            f"{r['polls_per_server_cpu_s']:>11.0f} {r['errors']:>6.0f} {r['queued']:>6.0f} {r['renders']:>7.0f}"
        )
    small, large = rows
    print(
        f"ratio polls/CPU-s, {large['jobs']:.0f} jobs vs {small['jobs']:.0f}: "
        f"{large['polls_per_server_cpu_s'] / small['polls_per_server_cpu_s']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
