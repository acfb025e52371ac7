"""The one retry policy, shared by the sync and async paths of the hook.

Reads (GET) retry on 429, any 5xx, timeouts and connection errors. A submit
(a POST that may start a billed job) retries only when the request surely did
not start one: 429, 503, or a connection that failed before anything was sent.
Waits are exponential with full jitter, capped; a ``Retry-After`` from the
server wins over the computed wait (capped too).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from segmind_provider.exceptions import (
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)

T = TypeVar("T")

BACKOFF_BASE = 1.0
"""First backoff ceiling in seconds; doubles each attempt (full jitter draws in [0, ceiling])."""
BACKOFF_CAP = 30.0
"""No computed wait exceeds this."""
RETRY_AFTER_CAP = 120.0
"""A server's Retry-After is honoured up to this many seconds; beyond it we would rather fail and let Airflow retry."""
DEFAULT_MAX_RETRIES = 5

SUBMIT_RETRYABLE_STATUS = frozenset({429, 503})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """The whole rule: what may be tried again, for reads and for submits."""
    if isinstance(exc, SegmindRateLimitError):
        return True
    if isinstance(exc, SegmindServerError):
        return idempotent or exc.status_code in SUBMIT_RETRYABLE_STATUS
    if isinstance(exc, SegmindTransportError):
        return idempotent or not exc.maybe_sent
    return False


def backoff_wait(
    attempt: int, exc: BaseException | None, rng: Callable[[float, float], float] | None = None
) -> float:
    """Wait before attempt ``attempt + 1``: Retry-After if given, else full-jitter exponential, both capped."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), RETRY_AFTER_CAP)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempt - 1)))
    return (rng or random.uniform)(0.0, ceiling)


def call(
    fn: Callable[[], T],
    *,
    idempotent: bool,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` once; only on a retryable failure hand the rest to tenacity (keeps the happy path cheap)."""
    try:
        return fn()
    except Exception as exc:
        if max_retries <= 0 or not is_retryable(exc, idempotent=idempotent):
            raise
        first_wait = backoff_wait(1, exc)
    sleep(first_wait)
    retrying = Retrying(
        stop=stop_after_attempt(max_retries),
        wait=_next_wait,
        retry=retry_if_exception(lambda e: is_retryable(e, idempotent=idempotent)),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


async def acall(
    fn: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    max_retries: int,
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Async twin of :func:`call`, same rule and waits, never blocking the loop."""
    try:
        return await fn()
    except Exception as exc:
        if max_retries <= 0 or not is_retryable(exc, idempotent=idempotent):
            raise
        first_wait = backoff_wait(1, exc)
    await asleep(first_wait)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_retries),
        wait=_next_wait,
        retry=retry_if_exception(lambda e: is_retryable(e, idempotent=idempotent)),
        sleep=asleep,
        reraise=True,
    )
    return await retrying(fn)


def _next_wait(state: RetryCallState) -> float:
    return backoff_wait(state.attempt_number + 1, state.outcome.exception() if state.outcome else None)


__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "DEFAULT_MAX_RETRIES",
    "RETRY_AFTER_CAP",
    "acall",
    "backoff_wait",
    "call",
    "is_retryable",
    "parse_retry_after",
]
