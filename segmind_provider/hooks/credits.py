"""One key's credit balance as this process knows it: the last read, lowered by what was submitted since.

``GET /v1/get-user-credits`` costs a request from the key's budget, so it is read at most once a
minute per key and process; in between, every submit lowers the known balance by its estimated
price (the catalog's). Kept per key in ``segmind_provider.runtime``; what counts as spendable and the
floor decisions are ``account.spend``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CreditBalance"]

#: Floating point slack: a balance that covers exactly N more images must allow N.
EPSILON = 1e-9


class CreditBalance:
    """Thread-safe: the read balance, when it was read, and the estimated spend since."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._read: float | None = None
        self._read_at = 0.0
        self._since = 0.0

    def stale(self, max_age: float) -> bool:
        """True before the first read and once the last one is ``max_age`` seconds old."""
        with self._lock:
            return self._read is None or self._clock() - self._read_at >= max_age

    def refresh(self, balance: float) -> None:
        """A fresh read: it already reflects what was submitted before it."""
        with self._lock:
            self._read, self._read_at, self._since = float(balance), self._clock(), 0.0

    def estimate(self) -> float | None:
        """The balance now, as far as this process knows (None before the first read)."""
        with self._lock:
            return None if self._read is None else self._read - self._since

    def try_charge(self, cost: float, floor: float) -> bool:
        """Count ``cost`` as spent if the balance stays at or above ``floor`` after it; else change nothing."""
        with self._lock:
            if self._read is None or self._read - self._since - cost < floor - EPSILON:
                return False
            self._since += cost
            return True
