"""The emulator's options: one dataclass, the runtime subset, and coercion with named errors."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

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
    "failing_words",
    "retention",
    "retention_scaled",
    "public_url",
    "media_public_url",
    "call_log_size",
    "history_size",
    "max_upload_mb",
    "live_status",
    "history_page_cap",
    "null_output_error",
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
    failing_words: list[str] = field(default_factory=list)
    """A prompt holding one of these ends FAILED for a reason that is not a content block (a worker
    error): what a retry may submit again, unlike a block."""
    retention: float = 3600.0
    retention_scaled: bool = False
    public_url: str | None = None
    media_public_url: str | None = None
    call_log_size: int = 10_000
    history_size: int = 100_000
    max_upload_mb: float = 32.0
    render_cache_mb: float = 128.0
    fault_seed: int = 0
    catalog_dir: str | None = None
    live_status: str | None = None
    """Report a queued or processing job with this status instead (a status clients do not know, e.g.
    ``IN_PROGRESS``); None: QUEUED and PROCESSING."""
    history_page_cap: int | None = None
    """Serve at most this many history rows per page whatever ``per_page`` asks, saying so in the
    answer's ``per_page``, ``total`` and ``total_pages``; None: up to 100."""
    null_output_error: str | None = None
    """A completed job's result carries ``output: null`` and this ``error`` text (a 200, not a 422)."""

    def check(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale: must be > 0")
        if self.workers < 1:
            raise ValueError("workers: must be >= 1")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit: must be >= 1 or null")
        if self.rate_limit_window <= 0 or self.retention < 0 or self.call_log_size < 1:
            raise ValueError("rate_limit_window, retention and call_log_size must be positive")
        if self.history_size < 1 or self.max_upload_mb <= 0:
            raise ValueError("history_size and max_upload_mb must be positive")
        if self.history_page_cap is not None and self.history_page_cap < 1:
            raise ValueError("history_page_cap: must be >= 1 or null")
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
    "max_upload_mb",
}
_OPTIONAL_FLOATS = {"credits"}
_INTS = {"workers", "call_log_size", "history_size", "fault_seed"}
_OPTIONAL_INTS = {"rate_limit", "history_page_cap"}
_OPTIONAL_TEXTS = {"live_status", "null_output_error"}
_URLS = {"public_url", "media_public_url"}


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
        if name in ("blocked_words", "failing_words"):
            if isinstance(value, str):
                value = [w for w in value.split(",") if w.strip()]
            return [str(w).strip().lower() for w in value]
        if name in _OPTIONAL_TEXTS:
            return None if value in (None, "") else str(value)
        if name in _URLS:
            return None if not value else str(value).rstrip("/")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from exc
    raise ValueError(f"{name}: unknown option")
