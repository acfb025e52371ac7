"""Which async HTTP client for the triggerer: httpx.AsyncClient vs aiohttp, on many concurrent polls.

Each client is ONE shared instance per event loop with a 50-connection pool (the way the hook
shares its session across triggers). N pollers start together, each doing ``--polls`` status GETs
``--interval`` seconds apart (jittered), against one loopback server running in a separate process.
A watchdog coroutine measures the worst event-loop stall (Airflow's triggerer warns at 200 ms).
A third row runs the same pollers through ``SegmindHook.aget_status`` (aiohttp inside, one hook per
poller, as triggers would), to show the hook's cost on the loop.

Run:  /work/venv/bin/python bench/async_clients.py [--pollers 2000 --polls 3 --interval 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from _common import BENCH_KEY, LoopWatchdog, bench_server

POOL = 50
KEY = BENCH_KEY
BODY = json.dumps({"request_id": "req-1", "status": "PROCESSING", "metrics": {}})


def serve(port: int) -> None:
    """aiohttp server in its own process, so the client loop under test is the only thing measured."""
    from aiohttp import web

    async def status(_: web.Request) -> web.Response:
        return web.Response(text=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/requests/{rid}/status", status)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


async def _run(
    name: str,
    make_get: Callable[[], Awaitable[tuple[Callable[[str], Awaitable[Any]], Callable[[], Awaitable[None]]]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    dog = LoopWatchdog()
    dog.start()
    get, close = await make_get()
    errors: Counter[str] = Counter()
    done = 0
    requests_made = 0

    async def poller(i: int) -> None:
        nonlocal done, requests_made
        try:
            for n in range(args.polls):
                if n:
                    await asyncio.sleep(args.interval * random.uniform(0.8, 1.2))
                requests_made += 1
                await get(f"req-{i}")
            done += 1
        except Exception as exc:
            errors[type(exc).__name__] += 1

    cpu = time.process_time()
    start = time.perf_counter()
    tasks = [asyncio.create_task(poller(i)) for i in range(args.pollers)]
    _, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    worst_stall = await dog.stop()
    await close()
    return {
        "client": name,
        "completed": done,
        "pollers": args.pollers,
        "lost": len(pending),
        "errors": dict(errors),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "requests": requests_made,
        "worst_stall_ms": round(worst_stall * 1000, 1),
    }


def _httpx_factory(base: str) -> Callable[[], Awaitable[Any]]:
    async def make() -> tuple[Callable[[str], Awaitable[Any]], Callable[[], Awaitable[None]]]:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
            timeout=httpx.Timeout(30.0),
        )

        async def get(rid: str) -> Any:
            response = await client.get(f"{base}/v2/requests/{rid}/status", headers={"x-api-key": KEY})
            response.raise_for_status()
            return response.json()

        return get, client.aclose

    return make


def _aiohttp_factory(base: str) -> Callable[[], Awaitable[Any]]:
    async def make() -> tuple[Callable[[str], Awaitable[Any]], Callable[[], Awaitable[None]]]:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL), timeout=aiohttp.ClientTimeout(total=30)
        )

        async def get(rid: str) -> Any:
            async with session.get(
                f"{base}/v2/requests/{rid}/status", headers={"x-api-key": KEY}
            ) as response:
                response.raise_for_status()
                return await response.json()

        return get, session.close

    return make


def _hook_factory() -> Callable[[], Awaitable[Any]]:
    async def make() -> tuple[Callable[[str], Awaitable[Any]], Callable[[], Awaitable[None]]]:
        from segmind_provider.hooks.segmind import SegmindHook
        from segmind_provider.runtime import process_state

        hooks: dict[str, SegmindHook] = {}

        async def get(rid: str) -> Any:
            hook = hooks.get(rid)
            if hook is None:
                hook = hooks[rid] = SegmindHook("segmind_bench")
            return await hook.aget_status(rid)

        return get, process_state().aclose_clients

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, default=2000)
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="give up on a client after this many seconds"
    )
    parser.add_argument("--clients", default="httpx,aiohttp,hook")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    with bench_server(__file__) as base:
        factories = {
            "httpx": _httpx_factory(base),
            "aiohttp": _aiohttp_factory(base),
            "hook": _hook_factory(),
        }
        print(
            f"command: {sys.executable} bench/async_clients.py --pollers {args.pollers} --polls {args.polls} "
            f"--interval {args.interval} --clients {args.clients}"
        )
        print(
            f"{'client':8} {'completed':>11} {'lost':>5} {'wall s':>7} {'cpu s':>6} {'requests':>8} {'worst stall ms':>14}  errors"
        )
        for name in args.clients.split(","):
            result = asyncio.run(_run(name, factories[name], args))
            print(
                f"{result['client']:8} {result['completed']:>5}/{result['pollers']:<5} {result['lost']:>5} "
                f"{result['wall_s']:>7} {result['cpu_s']:>6} {result['requests']:>8} {result['worst_stall_ms']:>14}  "
                f"{result['errors'] or '-'}"
            )


if __name__ == "__main__":
    main()
