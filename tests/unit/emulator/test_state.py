"""The timing model without HTTP: a simulated worker pool, lazily computed states."""

from __future__ import annotations

import pytest

from segmind_provider.testing.emulator.clock import Clock
from segmind_provider.testing.emulator.config import EmulatorConfig
from segmind_provider.testing.emulator.jobs import job_status
from segmind_provider.testing.emulator.models import ModelSpec
from segmind_provider.testing.emulator.state import EmulatorState


def _state(**options: object) -> EmulatorState:
    return EmulatorState(EmulatorConfig(**options))  # type: ignore[arg-type]


def test_worker_pool_keeps_extra_jobs_queued() -> None:
    state = _state(workers=2, time_scale=1.0)
    model = ModelSpec("m", latency=10.0, jitter=0.0)
    jobs = [state.jobs.schedule(model, {"prompt": "p"}, None) for _ in range(3)]
    now = state.clock.now()
    assert [job_status(j, now) for j in jobs] == ["PROCESSING", "PROCESSING", "QUEUED"]
    assert jobs[2].start == pytest.approx(jobs[0].end)
    assert job_status(jobs[2], jobs[0].end + 0.001) == "PROCESSING"
    assert job_status(jobs[2], jobs[2].end) == "COMPLETED"
    assert [j.inference_time for j in jobs] == [10.0, 10.0, 10.0]


def test_time_scale_shrinks_wall_time_not_reported_time() -> None:
    state = _state(time_scale=0.01)
    job = state.jobs.schedule(ModelSpec("m", latency=14.0, jitter=0.0), {}, None)
    assert job.end - job.start == pytest.approx(0.14)
    assert job.inference_time == 14.0


def test_jitter_stays_within_bounds() -> None:
    state = _state(workers=1000)
    spec = ModelSpec("flux-1.1-pro", latency=14.05, jitter=0.15)
    times = {state.jobs.schedule(spec, {}, None).inference_time for _ in range(200)}
    assert min(times) >= 14.05 * 0.85 - 0.01
    assert max(times) <= 14.05 * 1.15 + 0.01
    assert len(times) > 50


def test_blocked_jobs_fail_quickly() -> None:
    state = _state(blocked_words=["bad"])
    params = {"prompt": "Very BAD idea"}
    reason = state.jobs.blocked_reason(params)
    assert reason is not None
    job = state.jobs.schedule(ModelSpec("m", latency=14.0), params, reason)
    assert job.inference_time <= 1.0
    assert job_status(job, job.end) == "FAILED"


def test_pool_resize_keeps_busy_workers() -> None:
    state = _state(workers=4, time_scale=1.0)
    model = ModelSpec("m", latency=10.0, jitter=0.0)
    for _ in range(4):
        state.jobs.schedule(model, {}, None)
    state.update_config({"workers": 2})
    queued = state.jobs.schedule(model, {}, None)
    assert job_status(queued, state.clock.now()) == "QUEUED"
    state.update_config({"workers": 8})
    assert job_status(state.jobs.schedule(model, {}, None), state.clock.now()) == "PROCESSING"


def test_update_config_is_all_or_nothing() -> None:
    state = _state()
    with pytest.raises(ValueError):
        state.update_config({"credits": 5, "workers": 0})
    assert state.config.credits is None
    assert state.config.workers == 32


def test_sweep_drops_expired_jobs() -> None:
    state = _state(time_scale=0.001, retention=10)
    assert state.jobs.retention_real() == 10
    job = state.jobs.schedule(ModelSpec("m", latency=1.0, jitter=0.0), {}, None)
    state.jobs.add(job)
    state.clock.advance(20)  # past the retention, and past the pause between sweeps
    state.jobs.sweep()
    assert state.jobs.live == {}
    assert state.jobs.counters["expired"] == 1


def test_cold_model_keeps_jobs_queued_while_loading() -> None:
    state = _state(time_scale=1.0)
    model = ModelSpec("m", latency=10.0, jitter=0.0, cold_start=60.0, cold_after=600.0)
    first = state.jobs.schedule(model, {}, None)
    second = state.jobs.schedule(model, {}, None)
    assert job_status(first, state.clock.now()) == "QUEUED"
    assert first.start == pytest.approx(first.created + 60.0)
    assert second.start == pytest.approx(first.start)
    state.clock.advance(200)
    warm = state.jobs.schedule(model, {}, None)
    assert job_status(warm, state.clock.now()) == "PROCESSING"
    state.clock.advance(601)
    assert job_status(state.jobs.schedule(model, {}, None), state.clock.now()) == "QUEUED"


def test_the_clock_is_passed_in() -> None:
    """Time comes from the clock the state is given: a test steps it, nothing is patched."""
    now = [1000.0]
    clock = Clock(monotonic=lambda: now[0], wall=lambda: 1_700_000_000.0 + now[0])
    state = EmulatorState(EmulatorConfig(time_scale=1.0), clock=clock)
    job = state.jobs.schedule(ModelSpec("m", latency=10.0, jitter=0.0), {}, None)
    state.jobs.add(job)
    assert (job.start, job.end, job.wall_created) == (1000.0, 1010.0, 1_700_001_000.0)
    now[0] = 1009.0
    assert job_status(job, state.clock.now()) == "PROCESSING"
    state.clock.advance(1)
    assert job_status(job, state.clock.now()) == "COMPLETED"
    state.reset()
    assert state.clock.now() == 1009.0
    assert state.jobs.get(job.request_id) is None
