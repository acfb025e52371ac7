"""Run operators the way Airflow does across a deferral, with the triggerer in its own process.

The worker side (this process) runs ``execute`` in a thread pool; a ``TaskDeferred`` hands the
trigger (classpath + serialized kwargs, as the metadata database would hold them) to the triggerer
process and frees the thread, as a deferred task frees its worker slot; the trigger's first event
resumes the task with ``method_name(context, event=...)`` in the pool. The triggerer process runs each
trigger's ``run()`` as an asyncio task in one event loop, every event drained and the first one sent
back (Airflow's ``run_trigger``), and measures only itself: triggers held at once, the loop's longest
stall, garbage-collector passes, CPU and RSS.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from _common import GcPauses, LoopWatchdog, ProcessSampler, cpu_seconds

__all__ = ["DeferralRunner", "MemoryStore"]


class MemoryStore(dict):  # type: ignore[type-arg]
    """The task_state_store slice the operators use, in memory (one per task instance)."""

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        """The bench keeps no XComs."""


# --------------------------------------------------------------------------- triggerer process


def _triggerer_main(conn: Connection, warm: Callable[[], None] | None) -> None:
    asyncio.run(_triggerer(conn, warm))


async def _triggerer(conn: Connection, warm: Callable[[], None] | None) -> None:
    import airflow.jobs.triggerer_job_runner  # noqa: F401  (a triggerer's heap, as in triggerer_scale.py)

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    threading.Thread(target=lambda: _pump(conn, loop, inbox), daemon=True).start()
    send_lock = threading.Lock()

    def send(message: Any) -> None:
        with send_lock:
            conn.send(message)

    if warm is not None:
        await asyncio.to_thread(warm)
    gc.collect()
    send(("ready",))
    sampler, watchdog, pauses = ProcessSampler(), LoopWatchdog(), GcPauses()
    running: set[asyncio.Task[None]] = set()
    held = {"now": 0, "max": 0, "total": 0, "events": 0}
    started = False
    cpu0 = 0.0

    async def run_trigger(trigger_id: int, trigger: Any) -> None:
        first = True
        async for event in trigger.run():
            held["events"] += 1
            if first:
                first = False
                await asyncio.to_thread(send, ("event", trigger_id, event.payload))
        held["now"] -= 1

    while True:
        message = await inbox.get()
        if message[0] == "stop":
            break
        _, trigger_id, classpath, kwargs = message
        if not started:
            started = True
            sampler.start()
            watchdog.start()
            pauses.start()
            cpu0 = cpu_seconds()
        module, _, name = classpath.rpartition(".")
        trigger = getattr(importlib.import_module(module), name)(**kwargs)
        held["now"] += 1
        held["total"] += 1
        held["max"] = max(held["max"], held["now"])
        task = loop.create_task(run_trigger(trigger_id, trigger))
        running.add(task)
        task.add_done_callback(running.discard)
    cpu = cpu_seconds() - cpu0
    pauses.stop()
    stall = await watchdog.stop() if started else 0.0
    sampler.stop()
    send(
        (
            "stats",
            {
                "triggers_total": held["total"],
                "triggers_held_max": held["max"],
                "events": held["events"],
                "max_stall_ms": stall * 1000,
                "gc_longest_ms": pauses.longest * 1000,
                "gc_full_passes": pauses.full_passes,
                "cpu_s": cpu - sampler.cpu_used,
                "baseline_rss_mb": sampler.baseline_rss / 2**20,
                "peak_rss_mb": sampler.peak_rss / 2**20,
                "rss_growth_mb": (sampler.peak_rss - sampler.baseline_rss) / 2**20,
                "peak_sockets": sampler.peak_sockets,
            },
        )
    )


def _pump(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Any]) -> None:
    """Blocking reads off the loop's thread; each message handed to the loop."""
    while True:
        try:
            message = conn.recv()
        except EOFError:
            message = ("stop",)
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message[0] == "stop":
            return


# --------------------------------------------------------------------------- worker side


class DeferralRunner:
    """Worker threads + a triggerer process: run tasks to completion through their deferrals."""

    def __init__(self, workers: int, warm: Callable[[], None] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_triggerer_main, args=(child, warm), daemon=True)
        self._process.start()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="worker")
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[Any, dict[str, Any], str, Future[Any]]] = {}
        self._next_id = 0
        self._stats: Future[dict[str, Any]] = Future()
        self.deferrals = 0
        if self._conn.recv() != ("ready",):  # the triggerer has loaded what it runs: time from here on
            raise RuntimeError("the triggerer process did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except EOFError:
                return
            if message[0] == "stats":
                self._stats.set_result(message[1])
                return
            _, trigger_id, payload = message
            with self._lock:
                op, context, method, done = self._waiting.pop(trigger_id)

            def resume(o: Any = op, c: dict[str, Any] = context, p: Any = payload, m: str = method) -> Any:
                return getattr(o, m)(c, event=p)

            self._pool.submit(self._step, op, context, done, resume)

    def _step(self, op: Any, context: dict[str, Any], done: Future[Any], call: Callable[[], Any]) -> None:
        from airflow.sdk.exceptions import TaskDeferred

        try:
            result = call()
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            with self._lock:
                trigger_id = self._next_id
                self._next_id += 1
                self._waiting[trigger_id] = (op, context, deferred.method_name, done)
                self.deferrals += 1
            self._conn.send(("trigger", trigger_id, classpath, kwargs))
        except BaseException as exc:  # the task failed: its future says so
            done.set_exception(exc)
        else:
            done.set_result(result)

    def start(self, op: Any, store: bool = True) -> Future[Any]:
        """Run ``op.execute`` (in the pool); the future holds the task's return value or its error."""
        context: dict[str, Any] = {"ti": _TI()}
        if store:
            context["task_state_store"] = MemoryStore()
        done: Future[Any] = Future()
        self._pool.submit(self._step, op, context, done, lambda: op.execute(context))
        return done

    def stop(self) -> dict[str, Any]:
        """End the triggerer process; its measurements."""
        self._conn.send(("stop",))
        stats = self._stats.result(timeout=120)
        self._process.join(timeout=30)
        self._pool.shutdown(wait=True)
        return stats
