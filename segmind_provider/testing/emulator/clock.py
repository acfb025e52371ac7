"""The emulator's clock: passed to whatever reads the time, so a test can move it (`advance`) or
hand in its own time sources instead of patching a module's."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """Monotonic time for timing and wall time for timestamps, both moved forward by `advance`."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self.offset = 0.0

    def now(self) -> float:
        return self._monotonic() + self.offset

    def wall_now(self) -> float:
        """Epoch seconds as the emulator shows them (moved by `advance`)."""
        return self._wall() + self.offset

    def real_wall(self) -> float:
        """Epoch seconds as they really are: when a call was actually made."""
        return self._wall()

    def advance(self, seconds: float) -> None:
        """Jump forward by wall-clock seconds: completion, expiry and rate-limit windows all move,
        so tests see them without sleeping."""
        if seconds < 0:
            raise ValueError("seconds: must be >= 0")
        self.offset += seconds

    def reset(self) -> None:
        self.offset = 0.0
