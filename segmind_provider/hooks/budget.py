"""A client-side request budget per API key, shared by every hook and trigger in a process.

Segmind limits requests per minute per key (Free 5, Pro 50). Every poll spends
the same budget as a submit, so the hook paces all of them through one token
bucket per key. With a configured ``requests_per_minute`` = R the bucket holds
C = max(1, R // 50) tokens and refills at (R - C) / 60 per second, so no sliding
60 s window ever sees more than R requests from this process. Without a configured limit
the budget costs nothing until the first 429: then everyone on the key pauses
until ``Retry-After`` and a conservative rate is learned (80 % of what this
process sent in the last minute, lowered by 30 % on every further 429 episode,
never below 5 per minute, forgotten after 10 quiet minutes).

Priorities: when tokens are short, work already paid for goes first: result
fetches, then status polls, then submits. Submits absorb the waiting, so the key
stays fully used while a finished image is still noticed within a poll gap;
serving submits first was measured to starve polls (detection p99 22 s at
50/min, docs/benchmarks.md) without making more images.

The poll schedule asks the budget whether it is saturated (:meth:`RequestBudget.saturated`: a
request waited for a token within the last 30 s, or a 429 pause is on): then every poll takes the
place of another request, and waits poll once, past the likely end of their job, instead of near it.

In an Airflow deployment submits run in workers and polls in the triggerer: each
process has its own budget, so give each its share of the key's limit through the
connection's ``requests_per_minute`` (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from enum import IntEnum


class Priority(IntEnum):
    """Lower value is served first when tokens are short."""

    RESULT = 0
    POLL = 1
    SUBMIT = 2


DEFAULT_PAUSE = 2.0
"""Pause after a 429 that carried no Retry-After."""
MAX_PAUSE = 120.0
LEARNED_FORGET_AFTER = 600.0
MIN_LEARNED_RPM = 5.0
"""Learning never goes below Segmind's smallest plan (Free, 5/min); Retry-After pauses cover the rest."""
SATURATION_MEMORY = 30.0
"""A key counts as saturated for this long (seconds) after a request last had to wait for a token."""
_RECENT_WINDOW = 60.0


class RequestBudget:
    """Token bucket with priorities and 429 learning; thread-safe, with a sync and an async acquire."""

    def __init__(
        self,
        key_id: str,
        requests_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.key_id = key_id
        self._clock = clock
        self._sleep = sleep
        self._asleep = asleep
        self._lock = threading.Lock()
        self._configured_rpm: float | None = None
        self._learned_rpm: float | None = None
        self._last_429 = 0.0
        self._learn_cooldown_until = 0.0
        self._rate: float | None = None
        self._capacity = 0.0
        self._tokens = 0.0
        self._updated = 0.0
        self._paused_until = 0.0
        self._submit_reserve = 0.0
        self._waiting = [0, 0, 0]
        self._recent: deque[float] = deque(maxlen=20_000)
        self._short_at = -math.inf
        # False while there is no limit and no 429 seen: acquire is then one append.
        self._limited = False
        self.granted = 0
        self.rate_limited = 0
        if requests_per_minute:
            self.configure(requests_per_minute)

    def __repr__(self) -> str:
        return f"RequestBudget(key_id={self.key_id!r}, requests_per_minute={self.requests_per_minute!r})"

    @property
    def requests_per_minute(self) -> float | None:
        """The limit in force: the configured one, else the learned one, else None (unlimited)."""
        return self._configured_rpm if self._configured_rpm is not None else self._learned_rpm

    def configure(self, requests_per_minute: float | None) -> None:
        """Adopt a known limit; with several configurations for one key the lowest wins."""
        if not requests_per_minute or requests_per_minute <= 0:
            return
        with self._lock:
            rpm = float(requests_per_minute)
            if self._configured_rpm is not None:
                if rpm >= self._configured_rpm:
                    return
                rpm = min(rpm, self._configured_rpm)
            self._configured_rpm = rpm
            self._set_rate_locked(rpm)

    def _set_rate_locked(self, rpm: float) -> None:
        capacity = float(max(1, int(rpm // 50)))
        per_minute = rpm - capacity if rpm > capacity else rpm
        now = self._clock()
        if self._rate is None:
            self._tokens = capacity
        else:
            refilled = self._tokens + (now - self._updated) * self._rate
            self._tokens = min(refilled, capacity)
        self._updated = now
        self._rate = per_minute / 60.0
        self._capacity = capacity
        self._submit_reserve = 1.0 if capacity >= 3 else 0.0
        self._limited = True

    def _try_take(self, priority: Priority) -> float:
        """Take a token (return 0.0) or say how long to wait before asking again."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            if (
                self._configured_rpm is None
                and self._learned_rpm is not None
                and now - self._last_429 > LEARNED_FORGET_AFTER
            ):
                self._learned_rpm = None
                self._rate = None
            rate = self._rate
            if rate is None:
                if now >= self._paused_until:
                    self._limited = False
                self._grant_locked(now)
                return 0.0
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * rate)
            self._updated = now
            if any(self._waiting[q] for q in range(priority)):
                # Someone more urgent is waiting: let it have the next token first.
                self._short_at = now
                return max((2.0 - self._tokens) / rate, 0.01)
            need = 1.0 + (self._submit_reserve if priority == Priority.SUBMIT else 0.0)
            if self._tokens >= need:
                self._tokens -= 1.0
                self._grant_locked(now)
                return 0.0
            self._short_at = now
            return max((need - self._tokens) / rate, 0.001)

    def _grant_locked(self, now: float) -> None:
        self.granted += 1
        self._recent.append(now)

    def _first_try(self, priority: Priority) -> float:
        """0.0 when a request may go now (always, without a limit), else seconds before trying again."""
        if not self._limited:
            self.granted += 1
            self._recent.append(self._clock())
            return 0.0
        return self._try_take(priority)

    @contextlib.contextmanager
    def _queued(self, priority: Priority) -> Iterator[None]:
        """Count a waiter, so requests of lower priority step aside for it."""
        with self._lock:
            self._waiting[priority] += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting[priority] -= 1

    @staticmethod
    def _jittered(delay: float) -> float:
        return delay + random.uniform(0.0, min(0.05, delay * 0.1))

    def acquire(self, priority: Priority = Priority.POLL) -> None:
        """Block the calling thread until the budget allows one request."""
        delay = self._first_try(priority)
        if delay > 0.0:
            with self._queued(priority):
                while delay > 0.0:
                    self._sleep(self._jittered(delay))
                    delay = self._try_take(priority)

    async def aacquire(self, priority: Priority = Priority.POLL) -> None:
        """Async twin of :meth:`acquire`: waits with the event loop free."""
        delay = self._first_try(priority)
        if delay > 0.0:
            with self._queued(priority):
                while delay > 0.0:
                    await self._asleep(self._jittered(delay))
                    delay = self._try_take(priority)

    def saturated(self) -> bool:
        """True while requests on this key wait for tokens (or did, within ``SATURATION_MEMORY``).

        Then every poll takes the place of another request (a submit, another job's poll), so a wait
        should poll as seldom as its job allows; without a limit, or with tokens to spare, it need not.
        """
        if not self._limited:
            return False
        now = self._clock()
        return now < self._paused_until or now - self._short_at < SATURATION_MEMORY

    def note_rate_limited(self, retry_after: float | None) -> None:
        """A 429 arrived: pause everyone on this key and, if no limit is configured, learn one."""
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            pause = min(MAX_PAUSE, retry_after if retry_after is not None else DEFAULT_PAUSE)
            self._paused_until = max(self._paused_until, now + pause)
            self._last_429 = self._short_at = now
            self._limited = True
            if self._configured_rpm is None and now >= self._learn_cooldown_until:
                seen = sum(1 for t in self._recent if now - t <= _RECENT_WINDOW)
                if self._learned_rpm is None:
                    learned = max(MIN_LEARNED_RPM, seen * 0.8)
                else:
                    learned = max(MIN_LEARNED_RPM, self._learned_rpm * 0.7)
                self._learned_rpm = learned
                self._set_rate_locked(learned)
                # Empty bucket: the server just said we were over.
                self._tokens = 0.0
                # One episode of 429s (a burst answered together) lowers the rate once.
                self._learn_cooldown_until = now + pause + 1.0


__all__ = ["Priority", "RequestBudget"]
