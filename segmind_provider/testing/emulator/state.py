"""The emulator's in-memory world, one small class per concern, composed by `EmulatorState`:
the clock, the keys and their rate-limit windows, the credits, the jobs (`jobs.py`), the
uploads, the call log, the faults and the models. No I/O here.

API keys are never stored: only salted hashes (salt made per process), used to check a
configured key list, to keep per-key rate-limit windows and to show each key its own request
history.

Every piece holds the one `EmulatorConfig` object, which a runtime change or a reset updates in
place, so each reads the options as they are now.
"""

from __future__ import annotations

import copy
import hashlib
import os
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from .clock import Clock
from .config import RUNTIME_OPTIONS, EmulatorConfig, coerce_option
from .faults import FaultBook, FaultRule
from .jobs import Jobs
from .models import ModelSpec, default_models


class Keys:
    """The accepted keys, as salted hashes; None accepts any non-empty key."""

    def __init__(self, keys: Iterable[str] | None) -> None:
        self._salt = os.urandom(16)
        self._initial = self.hashes_of(keys)
        self.configured = self._initial

    def reset(self) -> None:
        self.configured = self._initial

    def hash(self, key: str) -> str:
        return hashlib.blake2b(key.encode(), key=self._salt, digest_size=12).hexdigest()

    def hashes_of(self, keys: Iterable[str] | str | None) -> frozenset[str] | None:
        """Hashes of a key list (or a comma-separated string); None stays None (any key)."""
        if keys is None:
            return None
        if isinstance(keys, str):
            keys = [k for k in keys.split(",") if k.strip()]
        return frozenset(self.hash(str(k).strip()) for k in keys)

    def accepted(self, key: str | None) -> bool:
        if not key:
            return False
        return self.configured is None or self.hash(key) in self.configured

    @property
    def count(self) -> int:
        return 0 if self.configured is None else len(self.configured)


class RateLimiter:
    """Per-key sliding windows of `rate_limit` calls per `rate_limit_window` seconds (keyed by hash)."""

    def __init__(self, config: EmulatorConfig, clock: Clock, keys: Keys) -> None:
        self._config = config
        self._clock = clock
        self._keys = keys
        self.windows: dict[str, deque[float]] = {}

    def reset(self) -> None:
        self.windows = {}

    def wait(self, key: str) -> float | None:
        """Count this call against the key's window; return seconds to wait if over the limit."""
        limit = self._config.rate_limit
        if limit is None:
            return None
        now = self._clock.now()
        window = self._config.rate_limit_window
        calls = self.windows.setdefault(self._keys.hash(key), deque())
        while calls and calls[0] <= now - window:
            calls.popleft()
        if len(calls) >= limit:
            return max(0.0, calls[0] + window - now)
        calls.append(now)
        return None


class Credits:
    """The account's balance: paid credits (None: unlimited), free credits spent first, the total spent."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self.reset()

    def reset(self) -> None:
        self.remaining = self._config.credits
        self.free = self._config.free_credits
        self.spent = 0.0

    def cost_of(self, model: ModelSpec) -> float:
        """The model's catalog price per call; `cost_per_image` for models without one."""
        return self._config.cost_per_image if model.cost is None else model.cost

    def can_pay(self, cost: float) -> bool:
        if self.remaining is None:
            return True
        return self.remaining + self.free + 1e-9 >= cost

    def pay(self, cost: float) -> None:
        """Spend free credits first, like a trial account."""
        self.spent += cost
        if self.remaining is None:
            return
        from_free = min(self.free, cost)
        self.free -= from_free
        self.remaining = max(0.0, self.remaining - (cost - from_free))

    def balance(self) -> dict[str, float]:
        credits = 1_000_000.0 if self.remaining is None else round(self.remaining, 6)
        return {"credits": credits, "free-credits": round(self.free, 6)}


@dataclass(frozen=True, slots=True)
class Asset:
    """An uploaded file, served from the media host."""

    data: bytes
    content_type: str
    ext: str
    sha256: str


class Assets:
    """Uploaded files by id: each upload gets its own id and URL, as Segmind's do (no de-duplication)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._files: dict[str, Asset] = {}
        self.uploads = 0

    def add(self, data: bytes, content_type: str, ext: str) -> tuple[str, Asset]:
        asset = Asset(data, content_type, ext, hashlib.sha256(data).hexdigest())
        asset_id = uuid.uuid4().hex
        self._files[asset_id] = asset
        self.uploads += 1
        return asset_id, asset

    def get(self, asset_id: str) -> Asset | None:
        return self._files.get(asset_id)


class CallLog:
    """The last `call_log_size` calls, each numbered; no header value is ever logged."""

    def __init__(self, clock: Clock, size: int) -> None:
        self._clock = clock
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.seq = 0

    def reset(self, size: int) -> None:
        self.entries = deque(maxlen=size)
        self.seq = 0

    def resize(self, size: int) -> None:
        self.entries = deque(self.entries, maxlen=size)

    def clear(self) -> None:
        self.entries.clear()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def record(
        self,
        method: str,
        path: str,
        endpoint: str,
        status: int,
        key_present: bool,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Log a call: only whether a key was sent (and, for uploads and submits, what was stored or created)."""
        self.seq += 1
        entry = {
            "seq": self.seq,
            "time": round(self._clock.real_wall(), 6),
            "method": method,
            "path": path,
            "endpoint": endpoint,
            "status": status,
            "key_present": key_present,
        }
        if detail:
            entry.update(detail)
        self.entries.append(entry)


def _assign(target: EmulatorConfig, source: EmulatorConfig) -> None:
    """Copy every option into the shared config object (the pieces keep their reference to it)."""
    for option in fields(source):
        setattr(target, option.name, getattr(source, option.name))


class EmulatorState:
    """The pieces, composed; owned by the server's event loop (no locks: one thread touches it).

    Only runtime config changes, `public_config` and `reset` span several pieces.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        api_keys: Iterable[str] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule] = (),
        clock: Clock | None = None,
    ) -> None:
        config.check()
        self._initial_config = copy.deepcopy(config)
        self._initial_models = copy.deepcopy(models or default_models(config.catalog_dir))
        self._initial_faults = [copy.deepcopy(f) for f in faults]
        self.clock = clock or Clock()
        self.config = copy.deepcopy(config)
        self.models = copy.deepcopy(self._initial_models)
        self.keys = Keys(api_keys)
        self.rate_limit = RateLimiter(self.config, self.clock, self.keys)
        self.credits = Credits(self.config)
        self.jobs = Jobs(self.config, self.clock)
        self.assets = Assets()
        self.calls = CallLog(self.clock, self.config.call_log_size)
        self.faults = FaultBook(seed=self.config.fault_seed)
        self.faults.restart(self._initial_faults)

    def reset(self) -> None:
        """Back to the startup options: jobs, history, uploads, calls, faults, windows, credits, config, clock."""
        self.clock.reset()
        _assign(self.config, copy.deepcopy(self._initial_config))
        self.models.clear()
        self.models.update(copy.deepcopy(self._initial_models))
        self.keys.reset()
        self.rate_limit.reset()
        self.credits.reset()
        self.jobs.reset()
        self.assets.reset()
        self.calls.reset(self.config.call_log_size)
        self.faults.restart(self._initial_faults)

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply runtime changes atomically: all valid or none applied."""
        new = copy.deepcopy(self.config)
        key_hashes = self.keys.configured
        for name, value in changes.items():
            if name == "api_keys":
                key_hashes = self.keys.hashes_of(value)
                continue
            if name not in RUNTIME_OPTIONS:
                raise ValueError(f"{name}: not a runtime option")
            setattr(new, name, coerce_option(name, value))
        new.check()
        old_workers, old_log_size = self.config.workers, self.config.call_log_size
        _assign(self.config, new)
        self.keys.configured = key_hashes
        if "credits" in changes:
            self.credits.remaining = new.credits
        if "free_credits" in changes:
            self.credits.free = new.free_credits
        if new.workers != old_workers:
            self.jobs.resize_pool(new.workers)
        if new.call_log_size != old_log_size:
            self.calls.resize(new.call_log_size)

    def public_config(self) -> dict[str, Any]:
        data = self.config.to_dict()
        data["api_keys_configured"] = self.keys.count
        data["models"] = {name: spec.to_dict() for name, spec in self.models.items()}
        data["credits_remaining"] = self.credits.remaining
        data["free_credits_remaining"] = self.credits.free
        return data
