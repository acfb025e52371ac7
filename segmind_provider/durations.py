"""How long jobs take, as this process has seen them: a small memory per model and size class.

Kept below the hooks, triggers and ``runtime`` (which holds the process's one observer): the poll
schedule (``triggers.polling``) reads it, and nothing here imports the package.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, replace

__all__ = ["OVERRUN_EVIDENCE", "DurationEstimate", "DurationObserver", "duration_key"]

#: The low quantile of observed durations is the 1/LOW_QUANTILE_CUTS one (the 2nd percentile): the
#: first poll lands one gap after it, so only the rare job ending sooner waits longer than a gap.
LOW_QUANTILE_CUTS = 50
#: How far below the low quantile the first poll may land, in units of (sample spread / samples):
#: 2 took the simulated p99 of detection (learning, 2,000 jobs, docs/operator.md) from 1.75 s to
#: 1.63 s for 0.06 more requests a job.
LOW_MARGIN = 2.0

#: Waits of one size class that found their job running past the learned range, with no completion in
#: between, before the learned durations are doubted: the schedule falls back to the catalog's figure
#: until the next completion says whether the service changed pace (a new range) or not (the tail).
OVERRUN_EVIDENCE = 3


def duration_key(model: str, size_class: int = 0) -> str:
    """Durations are learned per model and size class (``triggers.workload``); the default class is the model."""
    return model if size_class == 0 else f"{model}@{size_class:+d}"


@dataclass(frozen=True, slots=True)
class DurationEstimate:
    """Seconds from submit to completion: a low quantile, the typical value and a high quantile."""

    low: float
    typical: float
    high: float
    source: str  # "observed", "default" or "override"

    @classmethod
    def around(cls, typical: float, source: str) -> DurationEstimate:
        """Spread a single typical figure into a range, for when nothing has been observed yet."""
        typical = max(float(typical), 0.0)
        return cls(low=0.85 * typical, typical=typical, high=1.25 * typical, source=source)


class DurationObserver:
    """A small memory of recent job durations per key (``duration_key``) in this process.

    Thread-safe and bounded. Recent evidence wins: once ``OVERRUN_EVIDENCE`` waits in a row found
    their job running past the learned range, the learned durations are doubted (:meth:`estimate`
    gives None, so the catalog's figure applies) until the next completion, which replaces them if
    it falls outside their range (the pace changed) and joins them if not (those were the tail).
    """

    def __init__(self, maxlen: int = 64) -> None:
        self._maxlen = maxlen
        self._samples: dict[str, deque[float]] = {}
        # One estimate object per key until the next observation: thousands of waits share it.
        self._estimates: dict[str, DurationEstimate] = {}
        self._overruns: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, key: str, seconds: float) -> None:
        """Record one completed job's submit-to-completion duration."""
        if seconds < 0 or seconds != seconds:  # negative or NaN: a clock went backwards
            return
        with self._lock:
            samples = self._samples.setdefault(key, deque(maxlen=self._maxlen))
            if self._overruns.pop(key, 0) >= OVERRUN_EVIDENCE and samples:
                before = _estimate_from(sorted(samples))
                if not before.low <= seconds <= before.high:
                    samples.clear()  # the pace changed: what was learned describes another service
            samples.append(float(seconds))
            self._estimates.pop(key, None)

    def note_overrun(self, key: str) -> None:
        """A wait ran past the learned range for ``key``; enough in a row doubt what was learned."""
        with self._lock:
            count = self._overruns.get(key, 0) + 1
            self._overruns[key] = count
            if count >= OVERRUN_EVIDENCE:
                self._estimates.pop(key, None)

    def estimate(self, key: str) -> DurationEstimate | None:
        """Quantiles of what was observed for ``key``; None before the first observation or when doubted."""
        with self._lock:
            cached = self._estimates.get(key)
            if cached is not None:
                return cached
            samples = sorted(self._samples.get(key, ()))
            if not samples or self._overruns.get(key, 0) >= OVERRUN_EVIDENCE:
                return None
            estimate = _estimate_from(samples)
            self._estimates[key] = estimate
            return estimate

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._samples.clear()
            self._estimates.clear()
            self._overruns.clear()


def _estimate_from(samples: list[float]) -> DurationEstimate:
    """Quantiles of sorted ``samples``, the low end pulled down for the jobs that end sooner than all of them.

    Of n draws the next one lands below the smallest with chance 1/(n+1), and by about the spread
    over n: such a job waits for a first poll placed after every job seen so far, the tail of
    detection latency. So ``low`` moves down by ``LOW_MARGIN`` x spread / n: a wide margin while
    little is known, a sliver once dozens of jobs are. ``high`` moves up by as much, for the same
    reason at the other end: the first few completions of a burst are its quickest jobs, and a
    range that ended at them took every slower job for an overrun (its gaps grew, and three such
    doubted what was learned). Under three samples the spread says nothing and the default range
    around their median applies.
    """
    median = statistics.median(samples)
    if len(samples) < 3:
        around = DurationEstimate.around(median, "observed")
        return replace(around, low=min(samples[0], around.low), high=max(samples[-1], around.high))
    cuts = statistics.quantiles(samples, n=LOW_QUANTILE_CUTS, method="inclusive")
    margin = LOW_MARGIN * (samples[-1] - samples[0]) / len(samples)
    return DurationEstimate(
        low=max(cuts[0] - margin, 0.0), typical=median, high=cuts[-1] + margin, source="observed"
    )
