"""Spend that never surprises: the credit floor on SegmindOperator, the balance's one-minute life, costs
read from the account's request history in pages (real HTTP to the emulator)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors

from segmind_provider.account.history import costs_from_history, find_submitted
from segmind_provider.account.spend import balance_usd
from segmind_provider.exceptions import SegmindCreditFloorError, SegmindValidationError
from segmind_provider.hooks.credits import CreditBalance
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.runtime import reset_process_state
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"
PRICE = 0.05


def operator(**kw: Any) -> SegmindOperator:
    args: dict[str, Any] = {
        "task_id": "generate",
        "model": FLUX,
        "payload": {"prompt": "a lighthouse", "output_format": "png"},
        "deferrable": True,
        "timeout": 30,
    }
    args.update(kw)
    return SegmindOperator(**args)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_floor_refuses_a_submit_that_would_go_below_it(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]]
) -> None:
    emulator.configure(credits=1.04)
    with pytest.raises(SegmindCreditFloorError) as raised:
        operator(credit_floor=1.0).execute(make_context())
    assert "below the credit floor $1.0000" in str(raised.value) and "spent nothing" in str(raised.value)
    assert emulator.calls(endpoint="submit") == []


def test_the_balance_is_read_once_a_minute_and_lowered_by_what_was_submitted_since(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]]
) -> None:
    clock = Clock()
    reset_process_state(clock=clock)
    emulator.configure(credits=1.08)
    with pytest.raises(TaskDeferred):
        operator(credit_floor=1.0).execute(make_context())  # 1.08 - 0.05 = 1.03 is still above
    with pytest.raises(SegmindCreditFloorError):
        operator(credit_floor=1.0).execute(make_context())  # the known 1.03 cannot pay 0.05 more
    assert len(emulator.calls(endpoint="credits")) == 1 and len(emulator.calls(endpoint="submit")) == 1
    emulator.configure(credits=2.0)  # credits added
    clock.now += 61.0
    with pytest.raises(TaskDeferred):
        operator(credit_floor=1.0).execute(make_context())
    assert len(emulator.calls(endpoint="credits")) == 2


def test_the_connection_extra_sets_the_floor_and_no_floor_reads_nothing(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.configure(credits=0.5)
    with pytest.raises(TaskDeferred):
        operator().execute(make_context())
    assert emulator.calls(endpoint="credits") == []  # no floor: no balance read, no extra request
    conn = json.loads(emulator.connection_json())
    conn["extra"]["credit_floor"] = 0.5
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    reset_process_state()
    with pytest.raises(SegmindCreditFloorError):
        operator().execute(make_context())
    with pytest.raises(SegmindValidationError):  # a floor needs a price: refused before anything is spent
        operator(model="not-in-the-catalog", validate=False).execute(make_context())


async def test_the_result_and_the_asset_event_carry_the_cost(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]], tmp_path: Any
) -> None:
    asset = Asset("segmind://hero")
    events = OutletEventAccessors()
    op = operator(outlets=[asset], output_path=str(tmp_path / "hero"), expected_duration=0.14)
    context = make_context(outlet_events=events)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    (event,) = [e async for e in deferred.value.trigger.run()]
    result = op.execute_complete(context, event.payload)
    assert result["cost"] == PRICE and events[asset].extra["cost"] == PRICE


def test_the_trigger_is_told_how_much_the_payload_asks(
    emulator: SegmindEmulator, make_context: Callable[..., dict[str, Any]]
) -> None:
    payload = {"prompt": "a lighthouse", "aspect_ratio": "custom", "width": 512, "height": 512}
    with pytest.raises(TaskDeferred) as deferred:
        operator(payload=payload).execute(make_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, SegmindRequestTrigger)
    assert trigger.serialize()[1]["workload"] == pytest.approx(0.25)


def test_costs_come_from_the_history_a_page_per_hundred_requests(emulator: SegmindEmulator) -> None:
    hook = SegmindHook()
    ids = [hook.submit(FLUX, {"prompt": f"fox {i}"})["request_id"] for i in range(230)]
    emulator.clear_calls()
    costs = costs_from_history(hook, FLUX, ids, since=0.0)
    assert costs == {request_id: PRICE for request_id in ids}
    assert len(emulator.calls(endpoint="history")) == 3  # 230 requests: three pages of 100
    assert costs_from_history(hook, FLUX, [], since=0.0) == {}


def test_a_balance_is_paid_and_free_credits_and_charges_keep_the_floor() -> None:
    assert balance_usd({"credits": 1.5, "free-credits": 0.25}) == 1.75
    assert balance_usd({"credits": None, "free-credits": "x"}) == 0.0
    clock = Clock()
    balance = CreditBalance(clock)
    assert balance.stale(60.0) and balance.estimate() is None and not balance.try_charge(0.0, 0.0)
    balance.refresh(3.0)
    assert all(balance.try_charge(PRICE, 1.0) for _ in range(40))  # exactly 40 images fit
    assert not balance.try_charge(PRICE, 1.0) and balance.estimate() == pytest.approx(1.0)
    clock.now += 60.0
    assert balance.stale(60.0)


def test_lost_submits_are_matched_only_by_equal_inputs(emulator: SegmindEmulator) -> None:
    """A row whose body carries more than the item sent is another request; two items with the same
    payload take two different requests; nothing else matches."""
    hook = SegmindHook()
    started = time.time()
    fox = hook.submit(FLUX, {"prompt": "a fox", "seed": 1})["request_id"]
    hook.submit(FLUX, {"prompt": "a wolf", "seed": 5, "output_format": "webp"})  # more than "wolf" sent
    twins = [hook.submit(FLUX, {"prompt": "twins", "seed": 2})["request_id"] for _ in range(2)]
    hook.submit(FLUX, {"prompt": "someone else's", "seed": 3})
    wanted = {
        "fox": {"prompt": "a fox", "seed": 1},
        "wolf": {"prompt": "a wolf", "seed": 5},
        "twin-a": {"prompt": "twins", "seed": 2},
        "twin-b": {"prompt": "twins", "seed": 2},
        "never": {"prompt": "never sent", "seed": 4},
    }
    found, complete = find_submitted(hook, FLUX, wanted, known=(), since=started, pages=2)
    assert complete and found == {"fox": fox, "twin-a": twins[0], "twin-b": twins[1]}
    again, _ = find_submitted(hook, FLUX, wanted, known=[fox], since=started, pages=2)
    assert "fox" not in again
