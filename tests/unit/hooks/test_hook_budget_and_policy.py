"""RequestBudget pacing, priorities and 429 learning (fake clock), and the retry policy's arithmetic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer
from segmind_hook_testlib import KEY

from segmind_provider.exceptions import (
    SegmindBadRequestError,
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)
from segmind_provider.hooks import budget as budget_module
from segmind_provider.hooks import retry
from segmind_provider.hooks.budget import Priority, RequestBudget
from segmind_provider.hooks.connection import ConnectionSettings, key_id
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.runtime import process_state


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


def _budget_with(clock: FakeClock, rpm: float | None) -> RequestBudget:
    return RequestBudget("k", rpm, clock=clock, sleep=clock.sleep, asleep=clock.asleep)


def _wait_for(budget: RequestBudget, clock: FakeClock, priority: Priority) -> float:
    """How long ``acquire`` waited (virtual seconds) before granting a request."""
    before = clock.now
    budget.acquire(priority)
    return clock.now - before


def test_unlimited_budget_never_waits() -> None:
    clock = FakeClock()
    budget = _budget_with(clock, None)
    for _ in range(1000):
        budget.acquire(Priority.POLL)
    assert clock.slept == [] and budget.granted == 1000


@pytest.mark.parametrize("rpm", [5, 50, 120])
def test_configured_limit_never_exceeded_in_any_minute(rpm: int) -> None:
    clock = FakeClock()
    budget = _budget_with(clock, rpm)
    grants = []
    for _ in range(rpm * 4):
        budget.acquire(Priority.SUBMIT)
        grants.append(clock.now)
    for i, start in enumerate(grants):
        in_window = sum(1 for t in grants[i:] if t - start < 60.0)
        assert in_window <= rpm
    # and it is not needlessly slow: close to the steady rate (R - burst) per minute
    span = grants[-1] - grants[0]
    assert (len(grants) - 1) / span * 60 >= (rpm - max(1, rpm // 50)) * 0.95


def test_submits_leave_a_reserve_for_polls() -> None:
    clock = FakeClock()
    budget = _budget_with(clock, 300)  # capacity 6, submit reserve 1
    for _ in range(5):
        assert _wait_for(budget, clock, Priority.POLL) == 0.0
    assert _wait_for(budget, clock, Priority.RESULT) == 0.0  # the reserve is for paid-for work
    clock.now += 60  # refill
    for _ in range(5):
        assert _wait_for(budget, clock, Priority.POLL) == 0.0
    assert _wait_for(budget, clock, Priority.SUBMIT) > 0.0


def test_saturated_while_requests_wait_for_tokens_and_a_while_after() -> None:
    """What the poll schedule asks (``RequestWatch``): no limit, or tokens to spare, is not saturated;
    a request that had to wait is, for ``SATURATION_MEMORY`` seconds; so is a 429 pause."""
    clock = FakeClock()
    unlimited = _budget_with(clock, None)
    for _ in range(1000):
        unlimited.acquire(Priority.SUBMIT)
    assert not unlimited.saturated()
    budget = _budget_with(clock, 300)  # capacity 6, submit reserve 1
    for _ in range(5):
        budget.acquire(Priority.SUBMIT)
    assert not budget.saturated()  # tokens spent, none waited for
    assert _wait_for(budget, clock, Priority.SUBMIT) > 0.0
    assert budget.saturated()
    clock.now += budget_module.SATURATION_MEMORY - 1.0
    assert budget.saturated()
    clock.now += 2.0
    assert not budget.saturated()
    unlimited.note_rate_limited(5.0)
    assert unlimited.saturated()


class VirtualLoopClock(FakeClock):
    """Virtual time for concurrent async sleepers: time jumps to the earliest sleeper once all are blocked."""

    def __init__(self) -> None:
        super().__init__()
        self.sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    async def asleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, id(future), future))
        await future

    async def drive(self, tasks: list[asyncio.Task[None]]) -> None:
        while not all(t.done() for t in tasks):
            for _ in range(5):
                await asyncio.sleep(0)
            if self.sleepers:
                self.sleepers.sort(key=lambda item: item[:2])
                when, _, future = self.sleepers.pop(0)
                self.now = max(self.now, when)
                future.set_result(None)


async def test_async_poll_overtakes_waiting_submits() -> None:
    clock = VirtualLoopClock()
    budget = RequestBudget("k", 12, clock=clock, sleep=clock.sleep, asleep=clock.asleep)  # burst 1
    budget.acquire(Priority.SUBMIT)
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await budget.aacquire(priority)
        order.append(name)

    submits = [asyncio.create_task(take(f"submit{i}", Priority.SUBMIT)) for i in range(4)]
    for _ in range(3):
        await asyncio.sleep(0)
    poll = asyncio.create_task(take("poll", Priority.POLL))
    await clock.drive([*submits, poll])
    assert order[0] == "poll"
    assert sorted(order) == ["poll", "submit0", "submit1", "submit2", "submit3"]


def test_429_pauses_everyone_and_learns_a_rate() -> None:
    clock = FakeClock()
    budget = _budget_with(clock, None)
    for _ in range(30):
        budget.acquire(Priority.POLL)
    budget.note_rate_limited(5.0)
    assert budget.requests_per_minute == pytest.approx(24.0)
    assert _wait_for(budget, clock, Priority.SUBMIT) == pytest.approx(5.0, abs=0.06)
    assert clock.now >= 1005.0
    # a second 429 in the same episode does not lower the rate again; a later one does
    budget.note_rate_limited(1.0)
    assert budget.requests_per_minute == pytest.approx(24.0)
    clock.now += 30
    budget.note_rate_limited(None)
    assert budget.requests_per_minute == pytest.approx(24.0 * 0.7)
    assert _wait_for(budget, clock, Priority.SUBMIT) >= budget_module.DEFAULT_PAUSE
    # forgotten after a quiet period
    clock.now += budget_module.LEARNED_FORGET_AFTER + 1
    assert _wait_for(budget, clock, Priority.POLL) == 0.0
    assert budget.requests_per_minute is None


def test_configured_limit_is_not_overridden_by_learning() -> None:
    clock = FakeClock()
    budget = _budget_with(clock, 50)
    budget.note_rate_limited(2.0)
    assert budget.requests_per_minute == 50
    assert _wait_for(budget, clock, Priority.SUBMIT) == pytest.approx(2.0, abs=0.06)


def _settings(key: str, rpm: float | None = None) -> ConnectionSettings:
    return ConnectionSettings(base_url="http://x", api_key=key, requests_per_minute=rpm, key_id=key_id(key))


def test_process_keeps_one_budget_per_key_named_by_hash() -> None:
    a = process_state().budget(_settings(KEY, 50))
    b = process_state().budget(_settings(KEY))
    c = process_state().budget(_settings(KEY + "x"))
    assert a is b and a is not c
    assert a.key_id == key_id(KEY) and KEY not in a.key_id and KEY not in repr(a)
    process_state().budget(_settings(KEY, 20))
    assert a.requests_per_minute == 20  # the lowest configuration wins


def test_429_on_one_hook_pauses_another_on_the_same_key(
    httpserver: HTTPServer, conn_id: str, waits: list[float]
) -> None:
    httpserver.expect_ordered_request("/v2/requests/a/status").respond_with_json(
        {"error": "slow"}, status=429, headers={"Retry-After": "9"}
    )
    httpserver.expect_request("/v2/requests/a/status").respond_with_json({"status": "QUEUED"})
    httpserver.expect_request("/v2/requests/b/status").respond_with_json({"status": "QUEUED"})
    first, second = SegmindHook(conn_id), SegmindHook(conn_id)
    first.get_status("a")
    second.get_status("b")
    budget = process_state().budget(first.get_settings())
    assert budget is process_state().budget(second.get_settings())
    assert budget.rate_limited == 1
    # learned (none was configured), never below the smallest plan's limit
    assert budget.requests_per_minute == budget_module.MIN_LEARNED_RPM
    assert waits == [9.0]


# ------------------------------------------------------------------ retry policy


def test_backoff_ceilings_double_and_cap() -> None:
    top = [retry.backoff_wait(n, None, rng=lambda low, high: high) for n in range(1, 9)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    bottom = [retry.backoff_wait(n, None, rng=lambda low, high: low) for n in range(1, 9)]
    assert bottom == [0.0] * 8


def test_full_jitter_stays_within_ceiling() -> None:
    random.seed(7)
    for attempt in range(1, 12):
        ceiling = min(retry.BACKOFF_CAP, 2 ** (attempt - 1))
        values = [retry.backoff_wait(attempt, None) for _ in range(200)]
        assert all(0.0 <= v <= ceiling for v in values)
        assert max(values) > ceiling * 0.5  # jittered over the whole range, not a constant


def test_retry_after_wins_and_is_capped() -> None:
    assert retry.backoff_wait(1, SegmindRateLimitError("x", retry_after=12.0)) == 12.0
    assert retry.backoff_wait(1, SegmindServerError("x", retry_after=9999.0)) == retry.RETRY_AFTER_CAP


def test_parse_retry_after() -> None:
    assert retry.parse_retry_after("3") == 3.0
    assert retry.parse_retry_after("1.5") == 1.5
    assert retry.parse_retry_after("-4") == 0.0
    assert retry.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry.parse_retry_after("soon") is None
    assert retry.parse_retry_after("") is None
    assert retry.parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("exc", "get", "submit"),
    [
        (SegmindRateLimitError("x"), True, True),
        (SegmindServerError("x", status_code=503), True, True),
        (SegmindServerError("x", status_code=500), True, False),
        (SegmindServerError("x", status_code=502), True, False),
        (SegmindServerError("x", status_code=504), True, False),
        (SegmindTransportError("x", maybe_sent=False), True, True),
        (SegmindTransportError("x", maybe_sent=True), True, False),
        (SegmindBadRequestError("x", status_code=400), False, False),
        (ValueError("x"), False, False),
    ],
)
def test_retry_rule(exc: Exception, get: bool, submit: bool) -> None:
    assert retry.is_retryable(exc, idempotent=True) is get
    assert retry.is_retryable(exc, idempotent=False) is submit


def test_call_waits_grow_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    attempts = []

    def fail() -> None:
        attempts.append(1)
        raise SegmindServerError("down", status_code=500)

    with pytest.raises(SegmindServerError):
        retry.call(fail, idempotent=True, max_retries=7, sleep=seen.append)
    assert len(attempts) == 8
    assert seen == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


async def test_acall_same_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    async def record(seconds: float) -> None:
        seen.append(seconds)

    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise SegmindRateLimitError("slow", retry_after=2.5 if len(attempts) == 1 else None)
        return "ok"

    assert await retry.acall(flaky, idempotent=False, max_retries=5, asleep=record) == "ok"
    assert seen == [2.5, 2.0]


def test_max_retries_zero_means_one_attempt(
    make_conn: Callable[..., str], base_url: str, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/v2/requests/a/status").respond_with_json({}, status=503)
    with pytest.raises(SegmindServerError):
        SegmindHook(make_conn(base_url, max_retries=0)).get_status("a")
    assert len(httpserver.log) == 1
