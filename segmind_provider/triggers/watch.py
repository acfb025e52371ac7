"""RequestWatch: the decisions of one wait for a Segmind request, without I/O.

Shared by the trigger (async), the operator's worker wait and the benches, so every path
spends requests the same way, says the same things, and ends in the same event shape.
``start``/``on_status``/``on_error`` return either seconds to sleep before the next poll
or a final event dict (``wake``, after each sleep before the first poll, places that poll by
what was learned meanwhile); :meth:`RequestWatch.news` is what is worth a log line since the
last poll (a status change, an overrun, a streak of transient errors, a long wait).
"""

from __future__ import annotations

import random
from typing import Any

from segmind_provider.events import inference_time, make_event
from segmind_provider.exceptions import (
    SegmindError,
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)
from segmind_provider.hooks.budget import RequestBudget
from segmind_provider.hooks.errors import failure_reason
from segmind_provider.runtime import process_state
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.triggers.polling import (
    DurationEstimate,
    DurationObserver,
    PollSchedule,
    duration_key,
    error_delay,
    estimate_duration,
    observed_duration,
)
from segmind_provider.triggers.workload import size_class

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_ERRORS",
    "HEARTBEAT_SECONDS",
    "TRANSIENT_ERRORS",
    "RequestWatch",
    "watch_request",
]

#: Errors worth another poll: the hook already retried them, the wait tolerates a short run more.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)
DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
#: A wait with nothing new says it is still waiting this often (seconds).
HEARTBEAT_SECONDS = 180.0
#: A sleep that ends this close before the first poll (clock granularity) polls rather than sleeps again.
WAKE_SLACK = 0.005


class RequestWatch:
    """One wait's state and decisions (see the module docstring).

    ``budget`` is the key's request budget, or None while it is not known (the trigger sets it once
    a poll has read the connection): while it is saturated the wait polls as seldom as it can.
    """

    __slots__ = (
        "_doubted",
        "_expected_duration",
        "_first_at",
        "_last_poll_at",
        "_news",
        "_observer",
        "_overran",
        "_patient",
        "_rng",
        "_spoken_at",
        "_time_scale",
        "_workload",
        "budget",
        "consecutive_errors",
        "end_time",
        "last_status",
        "max_consecutive_errors",
        "model",
        "poll_interval",
        "polls",
        "request_id",
        "schedule",
        "submitted_at",
    )

    def __init__(
        self,
        *,
        request_id: str,
        model: str | None,
        poll_interval: float,
        end_time: float,
        submitted_at: float,
        observer: DurationObserver,
        rng: random.Random,
        expected_duration: float | None = None,
        time_scale: float = 1.0,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        workload: float = 1.0,
        patient: bool = False,
        budget: RequestBudget | None = None,
    ) -> None:
        self.request_id = request_id
        self.model = model
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self.submitted_at = float(submitted_at)
        self.max_consecutive_errors = max_consecutive_errors
        self._rng = rng
        self._observer = observer
        self._expected_duration = expected_duration
        self._time_scale = time_scale
        self._workload = workload
        self._patient = patient
        self.budget = budget
        self.schedule = PollSchedule(
            submitted_at=self.submitted_at,
            poll_interval=self.poll_interval,
            estimate=self._estimate(),
            rng=rng,
            patient=patient,
        )
        self.polls = 0
        self.consecutive_errors = 0
        self.last_status: str | None = None
        self._last_poll_at: float | None = None
        self._first_at: float | None = None
        self._overran = False
        self._doubted = False
        self._spoken_at = self.submitted_at
        self._news: str | None = None

    def _estimate(self) -> DurationEstimate | None:
        return estimate_duration(
            self.model,
            observer=self._observer,
            expected_duration=self._expected_duration,
            time_scale=self._time_scale,
            workload=self._workload,
        )

    def _refresh(self) -> None:
        """Adopt what other waits learned since (shared, cached estimates: an identity check)."""
        if self._expected_duration is None and self.model:
            estimate = self._estimate()
            if estimate is not self.schedule.estimate:
                self.schedule.estimate = estimate

    def _afford(self) -> bool:
        """Poll as seldom as the job allows while the key's budget is saturated (``RequestBudget.saturated``).

        There a poll takes the place of another request; with tokens to spare, or no limit, the wait
        polls near the likely end for a prompt notice. Returns whether that changed the schedule.
        """
        if self.budget is None:
            return False
        patient = self._patient or self.budget.saturated()
        if patient is self.schedule.patient:
            return False
        self.schedule.patient = patient
        return True

    def news(self) -> str | None:
        """What the last poll learned that is worth a log line (then forgotten), or None."""
        news, self._news = self._news, None
        return news

    def _doubt(self, now: float) -> None:
        """Tell the shared memory once when this job runs past the range it learned (see DurationObserver)."""
        estimate = self.schedule.estimate
        if (
            not self._doubted
            and self.model
            and estimate is not None
            and estimate.source == "observed"
            and now > self.schedule.anchor + estimate.high
        ):
            self._doubted = True
            self._observer.note_overrun(self._key())

    def _key(self) -> str:
        return duration_key(self.model or "", size_class(self._workload))

    def _say(self, text: str, now: float) -> None:
        self._news = f"Segmind request {self.request_id}: {text}"
        self._spoken_at = now

    def _sleep_until(self, at: float, now: float) -> float:
        return max(0.0, min(at, self.end_time) - now)

    def start(self, now: float) -> float:
        """Seconds until the wait first wakes: one gap before its first poll (:meth:`wake` then places
        that poll by what was learned meanwhile), or the poll itself when it is due within a gap
        (spread over one gap when a rebuilt trigger is already past it)."""
        self._afford()
        first = self._first_at = self.schedule.next_poll_at(now, None)
        look_again = first - self.schedule.gap
        if self.schedule.estimate is not None and look_again > now:
            return self._sleep_until(look_again, now)
        return self._sleep_until(first, now)

    def wake(self, now: float) -> float:
        """After a sleep: seconds more to wait before the first poll (0.0: poll now).

        What other waits learned meanwhile moves it. Earlier, by up to the gap :meth:`start` left, when
        their jobs ended sooner than the range it was placed by: a burst starts before anything is
        learned, and its earliest completions show where the range really begins. Later only when
        the new range lies wholly past the old one (quick jobs seen before slow ones): in a burst the
        latest completions are a biased sample (the short jobs are seen at the first polls, the long
        ones at the next), and chasing each shift within the range sent first polls past jobs that
        had ended. And past the high end while the key's budget is saturated (:meth:`_afford`).
        Later polls follow the schedule of the moment anyway (:meth:`on_status` refreshes it).
        """
        if self.polls or self._first_at is None:
            return 0.0
        before = self.schedule.estimate
        self._refresh()
        after = self.schedule.estimate
        if self._afford() or (before is not None and after is not None and after.low > before.high):
            self._first_at = max(now, self.schedule.first_poll_at())
        elif after is not before:
            self._first_at = min(self._first_at, max(now, self.schedule.first_poll_at()))
        wait = self._sleep_until(self._first_at, now)
        return wait if wait > WAKE_SLACK else 0.0

    def _timeout(self, now: float) -> dict[str, Any]:
        state = self.last_status or "not yet seen"
        return make_event(
            "timeout",
            self.request_id,
            f"Segmind request {self.request_id} was still {state} when the deadline passed "
            f"({now - self.submitted_at:.0f}s after submit); a retry re-attaches to it without paying "
            f"again, and a longer timeout suits a slower model",
            polls=self.polls,
        )

    def _note_status(self, status: str, now: float) -> None:
        waited = now - self.submitted_at
        if status != self.last_status:
            self._say(f"{status or 'no status'} ({waited:.0f}s after submit, poll {self.polls})", now)
        elif status == RequestStatus.PROCESSING and not self._overran and self.schedule.overrunning(now):
            self._overran = True
            estimate = self.schedule.estimate
            usual = f"{estimate.high:.0f}s" if estimate is not None else "its usual time"
            self._say(f"still PROCESSING after {waited:.0f}s, longer than {usual}; polling less often", now)
        elif now - self._spoken_at >= HEARTBEAT_SECONDS:
            self._say(f"still {status or 'waiting'} after {waited:.0f}s ({self.polls} polls)", now)

    def on_status(self, answer: dict[str, Any], now: float) -> dict[str, Any] | float:
        """Digest one status answer (a FAILED answer is returned by the hook, not raised)."""
        previous_poll, self._last_poll_at = self._last_poll_at, now
        self.polls += 1
        self.consecutive_errors = 0
        status = read_status(answer)
        # The status as said, for the log: a live one the provider does not know keeps its own name.
        said = (
            status.value if status is not RequestStatus.UNKNOWN else str(answer.get("status") or "").strip()
        )
        self._note_status(said, now)
        if status is RequestStatus.PROCESSING:
            self._doubt(now)
        self.last_status = said or None
        if status is RequestStatus.COMPLETED:
            inference = inference_time(answer)
            # After a QUEUED spell the start is only known to within a poll interval: a cold start
            # says little about the model's usual duration, so only clean runs are remembered.
            if self.model and not self.schedule.reanchored:
                self._observer.observe(
                    self._key(),
                    observed_duration(
                        anchor=self.schedule.anchor,
                        detected_at=now,
                        previous_poll_at=previous_poll,
                        inference_time=inference,
                    ),
                )
            return make_event(
                "success",
                self.request_id,
                f"Segmind request {self.request_id} completed",
                inference_time=inference,
                polls=self.polls,
            )
        if status is RequestStatus.FAILED:
            return make_event(
                "failed",
                self.request_id,
                failure_reason(answer),
                inference_time=inference_time(answer),
                polls=self.polls,
            )
        if now >= self.end_time:
            return self._timeout(now)
        self._refresh()
        self._afford()
        return self._sleep_until(self.schedule.next_poll_at(now, status), now)

    def on_error(self, exc: BaseException, now: float) -> dict[str, Any] | float:
        """Digest a failed poll: a short run of transient errors is waited out, anything else ends the wait."""
        self.polls += 1
        if not isinstance(exc, TRANSIENT_ERRORS):
            text = str(exc) if str(exc) else type(exc).__name__
            return make_event(
                "error",
                self.request_id,
                f"polling Segmind request {self.request_id} failed: {type(exc).__name__}: {text}",
                polls=self.polls,
                error_class=type(exc).__name__ if isinstance(exc, SegmindError) else None,
            )
        self.consecutive_errors += 1
        if self.consecutive_errors == 1:
            self._say(f"transient error, polling again: {type(exc).__name__}: {exc}", now)
        if self.consecutive_errors > self.max_consecutive_errors:
            return make_event(
                "error",
                self.request_id,
                f"polling Segmind request {self.request_id} failed {self.consecutive_errors} times "
                f"in a row; last: {type(exc).__name__}: {exc}",
                polls=self.polls,
            )
        if now >= self.end_time:
            return self._timeout(now)
        retry_after = getattr(exc, "retry_after", None)
        delay = error_delay(self.consecutive_errors, self.poll_interval, retry_after, self._rng)
        return self._sleep_until(now + delay, now)


def watch_request(
    *,
    request_id: str,
    model: str | None,
    poll_interval: float,
    end_time: float,
    submitted_at: float,
    expected_duration: float | None = None,
    time_scale: float = 1.0,
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    workload: float = 1.0,
    patient: bool = False,
    budget: RequestBudget | None = None,
) -> RequestWatch:
    """A watch using this process's learned durations and random generator (``segmind_provider.runtime``).

    ``patient`` makes every first poll wait past the high end of the job's range; ``budget`` (the
    key's) makes it so only while that budget is saturated.
    """
    state = process_state()
    return RequestWatch(
        request_id=request_id,
        model=model,
        poll_interval=poll_interval,
        end_time=end_time,
        submitted_at=submitted_at,
        observer=state.durations,
        rng=state.rng,
        expected_duration=expected_duration,
        time_scale=time_scale,
        max_consecutive_errors=max_consecutive_errors,
        workload=workload,
        patient=patient,
        budget=budget,
    )
