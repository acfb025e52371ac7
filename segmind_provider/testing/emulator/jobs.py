"""Jobs: the simulated worker pool, the live jobs clients poll and the request history.

A job's life (QUEUED -> PROCESSING -> COMPLETED/FAILED) is fixed by two timestamps computed at
submit time from the pool, so a status poll is a dict lookup and two comparisons: ten thousand
queued jobs cost no timers and no CPU while they wait.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .config import EmulatorConfig
from .models import ModelSpec
from .recipes import Recipe
from .render import seed_from_request_id


@dataclass(slots=True)
class Job:
    """One request. Its status is a function of the clock, never updated in place."""

    request_id: str
    model: str
    params: dict[str, Any]
    seed: int
    created: float
    start: float
    end: float
    inference_time: float
    error: str | None
    recipe: Recipe | None = None
    body: dict[str, Any] = field(default_factory=dict)
    key_hash: str | None = None
    cost: float = 0.0
    wall_created: float = 0.0

    def wall(self, t: float) -> float:
        """Epoch seconds of the emulator time `t` (which `advance` may have moved)."""
        return self.wall_created + (t - self.created)


def job_status(job: Job, now: float) -> str:
    if now < job.start:
        return "QUEUED"
    if now < job.end:
        return "PROCESSING"
    return "FAILED" if job.error else "COMPLETED"


class Jobs:
    """The pool, the live jobs (v2: status and result answer) and the history (every request, any key).

    Reads the shared config as it is now (the time scale, retention, worker count may change at run time).
    """

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.live: dict[str, Job] = {}
        self.history: OrderedDict[str, Job] = OrderedDict()
        now = self._clock.now()
        self._workers = [now] * self._config.workers
        self._last_used: dict[str, float] = {}
        self._warm_at: dict[str, float] = {}
        self._last_sweep = now
        self.counters = {"submitted": 0, "sync": 0, "expired": 0}

    def blocked_reason(self, params: dict[str, Any]) -> str | None:
        """Why a job with these params ends FAILED (a content block, or a configured failing word)."""
        prompt = str(params.get("prompt", "")).lower()
        for word in self._config.blocked_words:
            if word and word in prompt:
                return (
                    "Content moderation: the prompt was blocked by the safety (RAI) filter "
                    f"(flagged term: {word!r})"
                )
        for word in self._config.failing_words:
            if word and word in prompt:
                return f"Inference failed: the model worker stopped (emulated for {word!r})"
        return None

    @staticmethod
    def new_request(params: dict[str, Any]) -> tuple[str, int]:
        """A fresh request id and the job's seed (the given one, else derived from the id)."""
        request_id = str(uuid.uuid4())
        seed = params.get("seed")
        return request_id, seed_from_request_id(request_id) if seed is None else int(seed)

    def schedule(
        self,
        model: ModelSpec,
        params: dict[str, Any],
        error: str | None,
        *,
        request: tuple[str, int] | None = None,
        **extra: Any,
    ) -> Job:
        """Create a job and place it on the simulated worker pool (earliest free worker)."""
        request_id, seed = request or self.new_request(params)
        jitter_rng = random.Random(request_id)
        simulated = model.latency * (1 + jitter_rng.uniform(-model.jitter, model.jitter))
        if error:
            simulated = min(simulated, 1.0)
        simulated = round(simulated, 2)
        now = self._clock.now()
        scale = self._config.time_scale
        warm_at = self._warm_at.get(model.name, now)
        last = self._last_used.get(model.name)
        if model.cold_start and (last is None or now - last > model.cold_after * scale):
            warm_at = now + model.cold_start * scale
            self._warm_at[model.name] = warm_at
        self._last_used[model.name] = now
        free_at = heapq.heappop(self._workers)
        start = max(now, free_at, warm_at)
        end = start + simulated * scale
        heapq.heappush(self._workers, end)
        job = Job(request_id, model.name, params, seed, now, start, end, simulated, error, **extra)
        job.wall_created = self._clock.wall_now()
        return job

    def resize_pool(self, size: int) -> None:
        """Keep the busiest workers' end times, add idle ones: jobs already placed keep their times."""
        now = self._clock.now()
        busy = sorted(self._workers, reverse=True)[:size]
        busy += [now] * (size - len(busy))
        heapq.heapify(busy)
        self._workers = busy

    def add(self, job: Job, *, pollable: bool = True) -> None:
        """Record a job in the history; v2 jobs (`pollable`) also answer status and result calls."""
        self.history[job.request_id] = job
        while len(self.history) > self._config.history_size:
            self.history.popitem(last=False)
        if pollable:
            self.live[job.request_id] = job
            self.counters["submitted"] += 1
            self.sweep()

    def retention_real(self) -> float:
        scale = self._config.time_scale if self._config.retention_scaled else 1.0
        return self._config.retention * scale

    def get(self, request_id: str) -> Job | None:
        """A live job, or None when unknown or past its retention (then forgotten)."""
        job = self.live.get(request_id)
        if job is None:
            return None
        if self._clock.now() >= job.end + self.retention_real():
            del self.live[request_id]
            self.counters["expired"] += 1
            return None
        return job

    def expire(self, request_id: str | None = None) -> int:
        """Forget one job (or all): the client then sees 404, as after the retention time."""
        if request_id is None:
            count = len(self.live)
            self.live.clear()
        else:
            count = 1 if self.live.pop(request_id, None) else 0
        self.counters["expired"] += count
        return count

    def sweep(self) -> None:
        """Drop expired jobs at most once a second, so memory stays bounded on long runs."""
        now = self._clock.now()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        keep = self.retention_real()
        dead = [rid for rid, job in self.live.items() if now >= job.end + keep]
        for rid in dead:
            del self.live[rid]
        self.counters["expired"] += len(dead)

    def status_counts(self) -> dict[str, int]:
        now = self._clock.now()
        counts = {"QUEUED": 0, "PROCESSING": 0, "COMPLETED": 0, "FAILED": 0}
        for job in self.live.values():
            counts[job_status(job, now)] += 1
        return counts
