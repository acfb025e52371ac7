"""The adaptive poll schedule: where to put each status poll of a Segmind request.

Every status poll spends a request from a rate-limited key (Free 5, Pro 50 per
minute), so a fixed 1 s cadence costs ~16 requests for a ~14 s image. This
module places the first poll near the job's likely end, using the model's
typical duration (the catalog's figure, refined by the durations observed in
this process for requests of the same size class), then polls close behind it,
and backs off to ``poll_interval`` when the model is cold (``QUEUED`` for
minutes) or the job overruns.

Pure: no clock and no network (the catalog's data is read once). Callers pass the
time in, which keeps it testable and lets the trigger (async), the worker loop
(sync) and the benches share it.
See ``docs/operator.md`` for the schedule with a timeline.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import threading
from collections import deque
from dataclasses import dataclass, replace

from segmind_provider.catalog import typical_seconds
from segmind_provider.status import RequestStatus
from segmind_provider.triggers.workload import size_class

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "OVERRUN_EVIDENCE",
    "DurationEstimate",
    "DurationObserver",
    "PollSchedule",
    "duration_key",
    "error_delay",
    "estimate_duration",
    "follow_gap",
    "observed_duration",
]

#: Longest gap between two polls: the cadence for cold models, overruns and models with no estimate.
DEFAULT_POLL_INTERVAL = 5.0
#: The shortest gap the schedule ever uses; below this a poll costs more than it can gain.
MIN_GAP = 0.05
#: Gap behind the likely end; bounds detection latency for jobs that end on time.
MAX_FOLLOW_GAP = 1.7
#: Follow-up gaps as a fraction of the typical duration (14 s -> 1.68 s): wide enough that most jobs
#: are seen done by the first or second poll (~3.8 requests a job), narrow enough for a p99 under 2 s
#: (swept in simulation: 0.10 gave 4.1 requests, 0.125 a p99 above 2 s once durations are learned).
FOLLOW_FRACTION = 0.12
#: Gaps grow by this factor while QUEUED (cold model) or after an overrun, up to ``poll_interval``.
GROW = 1.5
#: Gaps are shortened by up to this fraction at random, so thousands of waits never poll in lockstep.
JITTER = 0.1
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
#: A payload's workload moves the catalog's figure by its square root: the fixed part of a job (queue,
#: load, encode) does not grow with size, the rest does; the root is off by at most the root of the
#: ratio whichever it is, and observations of that size class replace it after the first completion.
WORKLOAD_EXPONENT = 0.5


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


def estimate_duration(
    model: str | None,
    *,
    observer: DurationObserver,
    expected_duration: float | None = None,
    time_scale: float = 1.0,
    workload: float = 1.0,
) -> DurationEstimate | None:
    """What we believe about this request's duration: an override, then observations, then the catalog.

    ``workload`` (``triggers.workload``) picks the size class whose observations apply and moves
    the catalog's figure (given for a default request) by its square root. ``time_scale`` (a
    connection extra) shrinks the catalog's figure for a time-scaled emulator; observations are
    already in the scaled time.
    """
    if expected_duration is not None:
        return DurationEstimate.around(expected_duration, "override")
    if not model:
        return None
    observed = observer.estimate(duration_key(model, size_class(workload)))
    if observed is not None:
        return observed
    typical = typical_seconds(model)
    if typical is None:
        return None
    return _default_estimate(round(typical * time_scale * math.pow(workload, WORKLOAD_EXPONENT), 6))


@functools.lru_cache(maxsize=64)
def _default_estimate(typical: float) -> DurationEstimate:
    """One shared estimate per default duration (immutable, so every wait can hold the same one)."""
    return DurationEstimate.around(typical, "default")


def follow_gap(typical: float, poll_interval: float) -> float:
    """The gap between polls once the job is due: 12 % of its duration, within [MIN_GAP, 1.7 s]."""
    return max(MIN_GAP, min(FOLLOW_FRACTION * typical, MAX_FOLLOW_GAP, poll_interval))


def error_delay(
    consecutive_errors: int,
    poll_interval: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Back-off after a transient error: exponential from 0.5 s up to ``poll_interval``, Retry-After honoured."""
    draw = rng.random() if rng is not None else random.random()
    base = min(max(poll_interval, MIN_GAP), 0.5 * (2 ** max(consecutive_errors - 1, 0)))
    delay = base * (1.0 - JITTER * draw)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, float(retry_after))
    return delay


class PollSchedule:
    """Decides when the next status poll of one request happens.

    Call :meth:`next_poll_at` with the current time and the status the last poll
    returned (``None`` before the first poll); it returns an absolute time. The
    phases:

    * before the likely end: sleep until ``anchor + low + gap`` (``low`` is a low
      quantile of the duration, ``gap`` the follow-up gap), so jobs that finish
      early are still noticed within one gap;
    * ``PROCESSING`` inside the usual range: polls ``gap`` apart (constant: a
      shrinking gap was measured to spend more requests for no latency gain, since
      ``gap`` already bounds the latency);
    * ``PROCESSING`` past the high quantile (an overrun): gaps grow back to
      ``poll_interval``;
    * ``QUEUED`` (the job has not started: a cold model): gaps grow to
      ``poll_interval``; once it is seen ``PROCESSING`` the schedule re-anchors at
      the earliest moment the job could have started;
    * no estimate (an unknown model): every ``poll_interval``.

    Every gap is shortened by a random fraction (at most ``JITTER``) so many
    waits spread out; jitter never lengthens a gap, so the bounds above hold.
    A first poll already due (a trigger rebuilt after a restart, or a burst the
    triggerer picked up late) is spread over the next gap instead of all of them
    polling at once. ``patient`` waits (a batch on a rate-limited key, where a
    poll costs an image and a late notice costs nothing) poll first past the high
    end of the range instead of the low one: about one poll per job.
    """

    # Slots: a triggerer may hold 10,000 of these; no per-instance dict to allocate and scan.
    __slots__ = (
        "_last_poll",
        "_overrun_polls",
        "_queued_polls",
        "_rng",
        "_was_queued",
        "anchor",
        "estimate",
        "patient",
        "poll_interval",
        "reanchored",
    )

    def __init__(
        self,
        *,
        submitted_at: float,
        poll_interval: float,
        estimate: DurationEstimate | None,
        rng: random.Random,
        patient: bool = False,
    ) -> None:
        self.poll_interval = max(float(poll_interval), MIN_GAP)
        self.patient = patient
        self.estimate = estimate
        self.anchor = float(submitted_at)
        self._rng = rng
        self._last_poll: float | None = None
        self._queued_polls = 0
        self._overrun_polls = 0
        self._was_queued = False
        self.reanchored = False

    @property
    def gap(self) -> float:
        """The follow-up gap for this request (``poll_interval`` when there is no estimate)."""
        if self.estimate is None:
            return self.poll_interval
        return follow_gap(self.estimate.typical, self.poll_interval)

    def _jittered(self, gap: float) -> float:
        return gap * (1.0 - JITTER * self._rng.random())

    def _start(self) -> float:
        """Where the first poll goes, before its gap: the low end, or the high end for patient waits."""
        assert self.estimate is not None
        return self.estimate.high if self.patient else self.estimate.low

    def overrunning(self, now: float) -> bool:
        """True once the job runs past the high end of its usual duration (plus a gap)."""
        return self.estimate is not None and now > self.anchor + self.estimate.high + self.gap

    def first_poll_at(self) -> float:
        """When the first poll is due, absolute (an anchor in the past makes it due at once)."""
        if self.estimate is None:
            return self.anchor + self._jittered(self.poll_interval)
        return self.anchor + self._start() + self._jittered(self.gap)

    def next_poll_at(self, now: float, last_status: str | None) -> float:
        """The absolute time of the next poll, given the status the poll at ``now`` returned."""
        previous, self._last_poll = self._last_poll, now
        if last_status is None:
            self._last_poll = previous
            first = self.first_poll_at()
            if first > now:
                return first
            return now + self._rng.random() * min(self.gap, MAX_FOLLOW_GAP)
        if self.estimate is None:
            return now + self._jittered(self.poll_interval)
        if last_status == RequestStatus.QUEUED:
            self._was_queued = True
            self._queued_polls += 1
            return now + self._jittered(min(self.poll_interval, self.gap * GROW**self._queued_polls))
        if self._was_queued:
            # The job started somewhere between the previous poll and now: re-anchor on the earliest start.
            self._was_queued = False
            self._queued_polls = 0
            self._overrun_polls = 0
            self.anchor = previous if previous is not None else now
            self.reanchored = True
            return max(now + MIN_GAP, self.first_poll_at())
        if now < self.anchor + self._start():
            # The estimate moved later since the last poll (a stale one was doubted): go by the new one.
            return max(now + MIN_GAP, self.first_poll_at())
        if not self.overrunning(now):
            return now + self._jittered(self.gap)
        self._overrun_polls += 1
        return now + self._jittered(min(self.poll_interval, self.gap * GROW**self._overrun_polls))


def observed_duration(
    *,
    anchor: float,
    detected_at: float,
    previous_poll_at: float | None,
    inference_time: float | None,
) -> float:
    """Best guess of a job's duration from its anchor (submit, or its start after a QUEUED spell).

    The job ended between the previous poll and the poll that saw it done. The
    reported inference time is a lower bound on that (it leaves out queueing and
    transfer), and usually a close one: take the larger of the two lower bounds,
    so the estimate errs short (an extra poll) rather than long (a late one) and
    never creeps upward poll after poll. Without a usable inference time, take
    the middle of the window. An inference time longer than the wall-clock window
    is on another clock (a time-scaled emulator) and is ignored.
    """
    upper = max(detected_at - anchor, 0.0)
    lower = 0.0 if previous_poll_at is None else min(max(previous_poll_at - anchor, 0.0), upper)
    if inference_time is not None and 0 < inference_time <= upper:
        return max(lower, float(inference_time))
    return (lower + upper) / 2.0
