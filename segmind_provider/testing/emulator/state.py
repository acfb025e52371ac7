"""The emulator's in-memory world: configuration, models, jobs, accounts, call log.

No I/O here. A job's life (QUEUED -> PROCESSING -> COMPLETED/FAILED) is fixed
by two timestamps computed at submit time from a simulated worker pool, so a
status poll is a dict lookup and two comparisons: ten thousand queued jobs cost
no timers and no CPU while they wait.

API keys are never stored: only salted hashes (salt made per process), used to
check a configured key list and to keep per-key rate-limit windows.
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
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from .faults import FaultBook, FaultRule
from .render import seed_from_request_id
from .validation import validate_flux_1_1_pro, validate_generic

OUTPUT_KINDS = ("image", "text", "json")


@dataclass
class ModelSpec:
    """A model the emulator serves: its simulated latency and what it outputs."""

    name: str
    latency: float
    jitter: float = 0.15
    output: str = "image"
    cost: float | None = None
    # A model idle for `cold_after` simulated seconds needs `cold_start` more before its next job
    # runs (it stays QUEUED while it "loads"), like Segmind's cold models.
    cold_start: float = 0.0
    cold_after: float = 600.0

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output: must be one of {', '.join(OUTPUT_KINDS)}")
        if self.latency < 0 or not 0 <= self.jitter < 1:
            raise ValueError("latency must be >= 0 and jitter in [0, 1)")
        if self.cold_start < 0 or self.cold_after < 0:
            raise ValueError("cold_start and cold_after must be >= 0")

    @property
    def validator(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return validate_flux_1_1_pro if self.name == "flux-1.1-pro" else validate_generic

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latency": self.latency,
            "jitter": self.jitter,
            "output": self.output,
            "cost": self.cost,
            "cold_start": self.cold_start,
            "cold_after": self.cold_after,
        }


def default_models() -> dict[str, ModelSpec]:
    return {"flux-1.1-pro": ModelSpec("flux-1.1-pro", latency=14.05, jitter=0.15, output="image")}


# Options that may change while the emulator runs (admin endpoint, Python API).
RUNTIME_OPTIONS = (
    "time_scale",
    "workers",
    "credits",
    "free_credits",
    "cost_per_image",
    "rate_limit",
    "rate_limit_window",
    "blocked_words",
    "retention",
    "retention_scaled",
    "public_url",
    "media_public_url",
    "call_log_size",
)


@dataclass
class EmulatorConfig:
    """Every knob, with the defaults that make it "just work" for someone testing a DAG."""

    time_scale: float = 1.0
    workers: int = 32
    credits: float | None = None
    free_credits: float = 0.0
    cost_per_image: float = 0.05
    rate_limit: int | None = None
    rate_limit_window: float = 60.0
    blocked_words: list[str] = field(default_factory=list)
    retention: float = 3600.0
    retention_scaled: bool = False
    public_url: str | None = None
    media_public_url: str | None = None
    call_log_size: int = 10_000
    render_cache_mb: float = 128.0
    fault_seed: int = 0

    def check(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale: must be > 0")
        if self.workers < 1:
            raise ValueError("workers: must be >= 1")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit: must be >= 1 or null")
        if self.rate_limit_window <= 0 or self.retention < 0 or self.call_log_size < 1:
            raise ValueError("rate_limit_window, retention and call_log_size must be positive")
        if self.credits is not None and self.credits < 0:
            raise ValueError("credits: must be >= 0 or null (unlimited)")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self)}


_FLOATS = {
    "time_scale",
    "free_credits",
    "cost_per_image",
    "rate_limit_window",
    "retention",
    "render_cache_mb",
}
_OPTIONAL_FLOATS = {"credits"}
_INTS = {"workers", "call_log_size", "fault_seed"}
_OPTIONAL_INTS = {"rate_limit"}


def coerce_option(name: str, value: Any) -> Any:
    """Turn JSON/CLI input into the option's type, with an error naming the option."""
    try:
        if name in _FLOATS:
            return float(value)
        if name in _OPTIONAL_FLOATS:
            return None if value is None else float(value)
        if name in _INTS:
            return int(value)
        if name in _OPTIONAL_INTS:
            return None if value in (None, 0) else int(value)
        if name == "retention_scaled":
            return bool(value)
        if name == "blocked_words":
            if isinstance(value, str):
                value = [w for w in value.split(",") if w.strip()]
            return [str(w).strip().lower() for w in value]
        if name in ("public_url", "media_public_url"):
            return None if not value else str(value).rstrip("/")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from exc
    raise ValueError(f"{name}: unknown option")


@dataclass(slots=True)
class Job:
    """One v2 request. Its status is a function of the clock, never updated in place."""

    request_id: str
    model: str
    params: dict[str, Any]
    seed: int
    created: float
    start: float
    end: float
    inference_time: float
    error: str | None


def job_status(job: Job, now: float) -> str:
    if now < job.start:
        return "QUEUED"
    if now < job.end:
        return "PROCESSING"
    return "FAILED" if job.error else "COMPLETED"


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
        self._initial_models = copy.deepcopy(models or default_models())
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
        self.counters = {"submitted": 0, "sync": 0, "expired": 0}

    def reset(self) -> None:
        """Back to the startup options: jobs, calls, faults, windows, credits and config."""
        self.clock_offset = 0.0
        self._reset()

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

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
        prompt = str(params.get("prompt", "")).lower()
        for word in self.config.blocked_words:
            if word and word in prompt:
                return (
                    "Content moderation: the prompt was blocked by the safety (RAI) filter "
                    f"(flagged term: {word!r})"
                )
        return None

    def schedule(self, model: ModelSpec, params: dict[str, Any], error: str | None) -> Job:
        """Create a job and place it on the simulated worker pool (earliest free worker)."""
        request_id = str(uuid.uuid4())
        seed = params.get("seed")
        seed = seed_from_request_id(request_id) if seed is None else int(seed)
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
        return Job(request_id, model.name, params, seed, now, start, end, simulated, error)

    def add_job(self, job: Job) -> None:
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

    # -- calls -----------------------------------------------------------------------
    def record(self, method: str, path: str, endpoint: str, status: int, key_present: bool) -> None:
        """Log a call without any header values: only whether a key was sent."""
        self.call_seq += 1
        self.calls.append(
            {
                "seq": self.call_seq,
                "time": round(time.time(), 6),
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "status": status,
                "key_present": key_present,
            }
        )


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
