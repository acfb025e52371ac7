"""The emulator's in-memory world: models, jobs, request history, uploads, accounts, call log.

No I/O here. A job's life (QUEUED -> PROCESSING -> COMPLETED/FAILED) is fixed
by two timestamps computed at submit time from a simulated worker pool, so a
status poll is a dict lookup and two comparisons: ten thousand queued jobs cost
no timers and no CPU while they wait.

API keys are never stored: only salted hashes (salt made per process), used to
check a configured key list, to keep per-key rate-limit windows and to show each
key its own request history.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
import os
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import RUNTIME_OPTIONS, EmulatorConfig, coerce_option
from .faults import FaultBook, FaultRule
from .models import ModelSpec, default_models
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


@dataclass(frozen=True, slots=True)
class Asset:
    """An uploaded file, served from the media host."""

    data: bytes
    content_type: str
    ext: str
    sha256: str


class EmulatorState:
    """Mutable state, owned by the server's event loop (no locks: one thread touches it)."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        api_keys: Iterable[str] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule] = (),
    ) -> None:
        config.check()
        self._salt = os.urandom(16)
        self._initial_config = copy.deepcopy(config)
        self._initial_models = copy.deepcopy(models or default_models(config.catalog_dir))
        self._initial_faults = [copy.deepcopy(f) for f in faults]
        self._initial_key_hashes = self._hash_keys(api_keys)
        self.clock_offset = 0.0
        self._reset()

    # -- lifecycle -------------------------------------------------------------------
    def _reset(self) -> None:
        self.config = copy.deepcopy(self._initial_config)
        self.models = copy.deepcopy(self._initial_models)
        self.key_hashes: frozenset[str] | None = self._initial_key_hashes
        self.faults = FaultBook(seed=self.config.fault_seed)
        for rule in self._initial_faults:
            self.faults.add(copy.deepcopy(rule))
        self.jobs: dict[str, Job] = {}
        self.history: OrderedDict[str, Job] = OrderedDict()
        self.assets: dict[str, Asset] = {}
        self.calls: deque[dict[str, Any]] = deque(maxlen=self.config.call_log_size)
        self.call_seq = 0
        self.rate_windows: dict[str, deque[float]] = {}
        self.credits = self.config.credits
        self.free_credits = self.config.free_credits
        self.spent = 0.0
        self._workers = [self.now()] * self.config.workers
        self._last_used: dict[str, float] = {}
        self._warm_at: dict[str, float] = {}
        self._last_sweep = self.now()
        self.counters = {"submitted": 0, "sync": 0, "expired": 0, "uploads": 0}

    def reset(self) -> None:
        """Back to the startup options: jobs, history, uploads, calls, faults, windows, credits, config."""
        self.clock_offset = 0.0
        self._reset()

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def wall_now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Jump the emulator's clock forward by wall-clock seconds: completion, expiry and
        rate-limit windows all move, so tests see them without sleeping."""
        if seconds < 0:
            raise ValueError("seconds: must be >= 0")
        self.clock_offset += seconds

    # -- config ----------------------------------------------------------------------
    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply runtime changes atomically: all valid or none applied."""
        new = copy.deepcopy(self.config)
        key_hashes = self.key_hashes
        for name, value in changes.items():
            if name == "api_keys":
                key_hashes = self._hash_keys(value)
                continue
            if name not in RUNTIME_OPTIONS:
                raise ValueError(f"{name}: not a runtime option")
            setattr(new, name, coerce_option(name, value))
        new.check()
        old = self.config
        self.config = new
        self.key_hashes = key_hashes
        if "credits" in changes:
            self.credits = new.credits
        if "free_credits" in changes:
            self.free_credits = new.free_credits
        if new.workers != old.workers:
            self._resize_pool(new.workers)
        if new.call_log_size != old.call_log_size:
            self.calls = deque(self.calls, maxlen=new.call_log_size)

    def _resize_pool(self, size: int) -> None:
        now = self.now()
        busy = sorted(self._workers, reverse=True)[:size]
        busy += [now] * (size - len(busy))
        heapq.heapify(busy)
        self._workers = busy

    def public_config(self) -> dict[str, Any]:
        data = self.config.to_dict()
        data["api_keys_configured"] = 0 if self.key_hashes is None else len(self.key_hashes)
        data["models"] = {name: spec.to_dict() for name, spec in self.models.items()}
        data["credits_remaining"] = self.credits
        data["free_credits_remaining"] = self.free_credits
        return data

    # -- keys, rate limits, credits ---------------------------------------------------
    def _hash_keys(self, keys: Iterable[str] | None) -> frozenset[str] | None:
        if keys is None:
            return None
        if isinstance(keys, str):
            keys = [k for k in keys.split(",") if k.strip()]
        return frozenset(self.key_hash(str(k).strip()) for k in keys)

    def key_hash(self, key: str) -> str:
        return hashlib.blake2b(key.encode(), key=self._salt, digest_size=12).hexdigest()

    def key_accepted(self, key: str | None) -> bool:
        if not key:
            return False
        return self.key_hashes is None or self.key_hash(key) in self.key_hashes

    def rate_limited(self, key: str) -> float | None:
        """Count this call against the key's window; return seconds to wait if over the limit."""
        limit = self.config.rate_limit
        if limit is None:
            return None
        now = self.now()
        window = self.config.rate_limit_window
        calls = self.rate_windows.setdefault(self.key_hash(key), deque())
        while calls and calls[0] <= now - window:
            calls.popleft()
        if len(calls) >= limit:
            return max(0.0, calls[0] + window - now)
        calls.append(now)
        return None

    def cost_of(self, model: ModelSpec) -> float:
        """The model's catalog price per call; `cost_per_image` for models without one."""
        return self.config.cost_per_image if model.cost is None else model.cost

    def can_pay(self, cost: float) -> bool:
        if self.credits is None:
            return True
        return self.credits + self.free_credits + 1e-9 >= cost

    def pay(self, cost: float) -> None:
        """Spend free credits first, like a trial account."""
        self.spent += cost
        if self.credits is None:
            return
        from_free = min(self.free_credits, cost)
        self.free_credits -= from_free
        self.credits = max(0.0, self.credits - (cost - from_free))

    def balance(self) -> dict[str, float]:
        credits = 1_000_000.0 if self.credits is None else round(self.credits, 6)
        return {"credits": credits, "free-credits": round(self.free_credits, 6)}

    # -- jobs ------------------------------------------------------------------------
    def blocked_reason(self, params: dict[str, Any]) -> str | None:
        """Why a job with these params ends FAILED (a content block, or a configured failing word)."""
        prompt = str(params.get("prompt", "")).lower()
        for word in self.config.blocked_words:
            if word and word in prompt:
                return (
                    "Content moderation: the prompt was blocked by the safety (RAI) filter "
                    f"(flagged term: {word!r})"
                )
        for word in self.config.failing_words:
            if word and word in prompt:
                return f"Inference failed: the model worker stopped (emulated for {word!r})"
        return None

    def new_request(self, params: dict[str, Any]) -> tuple[str, int]:
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
        now = self.now()
        scale = self.config.time_scale
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
        job.wall_created = self.wall_now()
        return job

    def add_job(self, job: Job, *, pollable: bool = True) -> None:
        """Record a job in the history; v2 jobs (`pollable`) also answer status and result calls."""
        self.history[job.request_id] = job
        while len(self.history) > self.config.history_size:
            self.history.popitem(last=False)
        if pollable:
            self.jobs[job.request_id] = job
            self.counters["submitted"] += 1
            self.sweep()

    def retention_real(self) -> float:
        scale = self.config.time_scale if self.config.retention_scaled else 1.0
        return self.config.retention * scale

    def get_job(self, request_id: str) -> Job | None:
        job = self.jobs.get(request_id)
        if job is None:
            return None
        if self.now() >= job.end + self.retention_real():
            del self.jobs[request_id]
            self.counters["expired"] += 1
            return None
        return job

    def expire(self, request_id: str | None = None) -> int:
        """Forget one job (or all): the client then sees 404, as after the retention time."""
        if request_id is None:
            count = len(self.jobs)
            self.jobs.clear()
        else:
            count = 1 if self.jobs.pop(request_id, None) else 0
        self.counters["expired"] += count
        return count

    def sweep(self) -> None:
        """Drop expired jobs at most once a second, so memory stays bounded on long runs."""
        now = self.now()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        keep = self.retention_real()
        dead = [rid for rid, job in self.jobs.items() if now >= job.end + keep]
        for rid in dead:
            del self.jobs[rid]
        self.counters["expired"] += len(dead)

    def status_counts(self) -> dict[str, int]:
        now = self.now()
        counts = {"QUEUED": 0, "PROCESSING": 0, "COMPLETED": 0, "FAILED": 0}
        for job in self.jobs.values():
            counts[job_status(job, now)] += 1
        return counts

    # -- uploads ---------------------------------------------------------------------
    def add_asset(self, data: bytes, content_type: str, ext: str) -> tuple[str, Asset]:
        """Store an uploaded file under a new id (each upload gets its own URL, as Segmind's do)."""
        asset = Asset(data, content_type, ext, hashlib.sha256(data).hexdigest())
        asset_id = uuid.uuid4().hex
        self.assets[asset_id] = asset
        self.counters["uploads"] += 1
        return asset_id, asset

    # -- calls -----------------------------------------------------------------------
    def record(
        self,
        method: str,
        path: str,
        endpoint: str,
        status: int,
        key_present: bool,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Log a call without any header values: only whether a key was sent (and, for uploads
        and submits, what was stored or created)."""
        self.call_seq += 1
        entry = {
            "seq": self.call_seq,
            "time": round(time.time(), 6),
            "method": method,
            "path": path,
            "endpoint": endpoint,
            "status": status,
            "key_present": key_present,
        }
        if detail:
            entry.update(detail)
        self.calls.append(entry)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
