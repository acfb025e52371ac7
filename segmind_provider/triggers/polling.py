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

from segmind_provider.catalog import typical_seconds
from segmind_provider.durations import DurationEstimate, DurationObserver, duration_key
from segmind_provider.status import RequestStatus
from segmind_provider.triggers.workload import size_class

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "PollSchedule",
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
#: A payload's workload moves the catalog's figure by its square root: the fixed part of a job (queue,
#: load, encode) does not grow with size, the rest does; the root is off by at most the root of the
#: ratio whichever it is, and observations of that size class replace it after the first completion.
WORKLOAD_EXPONENT = 0.5


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
