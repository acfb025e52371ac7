"""Shared fixtures: the emulator on loopback (the fixtures users get) and a clean process memory per test."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segmind_provider.runtime import reset_process_state
from segmind_provider.testing.emulator.pytest_plugin import pytest_configure as pytest_configure
from segmind_provider.testing.emulator.pytest_plugin import (
    segmind_emulator,
    segmind_emulator_connection,
    segmind_emulator_session,
)
from segmind_provider.testing.emulator.runner import SegmindEmulator

__all__ = [
    "FakeTaskInstance",
    "FakeTaskStateStore",
    "segmind_emulator",
    "segmind_emulator_connection",
    "segmind_emulator_session",
]

#: The unit test modules ``make test-floor`` runs again on the oldest Airflow pyproject.toml admits
#: (marked ``floor`` here, in one place). What differs between Airflow versions is Airflow's side of
#: the contract, so these are the modules that drive our code through Airflow's own machinery: DAG
#: parsing and provider registration, deferral (``TaskDeferred``, trigger serialisation, the
#: sensor), the task context and outlets, the async connection lookup (3.2 has only the sync one),
#: and ObjectStoragePath. The others test our logic and the emulator with plain objects and run once.
FLOOR_MODULES = (
    "tests/unit/test_dagbag.py",
    "tests/unit/test_provider_info.py",
    "tests/unit/test_operator.py",
    "tests/unit/test_batch.py",
    "tests/unit/test_spend.py",
    "tests/unit/test_sensor.py",
    "tests/unit/test_trigger.py",
    "tests/unit/test_inputs.py",
    "tests/unit/test_outputs.py",
    "tests/unit/hooks/test_hook_async.py",
    "tests/unit/test_review.py",
)
ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by the marks added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the floor modules. A listed module that is gone (renamed, moved) is an error rather
    than a quietly smaller floor check."""
    missing = [module for module in FLOOR_MODULES if not (ROOT / module).is_file()]
    if missing:
        raise pytest.UsageError(f"FLOOR_MODULES in tests/conftest.py names missing files: {missing}")
    floor = {ROOT / module for module in FLOOR_MODULES}
    for item in items:
        if item.path in floor:
            item.add_marker(pytest.mark.floor)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI=true`` a skip is a failure: CI installs everything the suite needs, so a test that
    skips there (no chromium, no PostgreSQL, no console script) would pass without having run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


#: flux-1.1-pro "takes" ~14 s; at the plugin's 100x time scale that is ~0.14 s of wall time.
SCALED_FLUX_SECONDS = 0.14


@pytest.fixture(autouse=True)
def _fresh_process_memory() -> Iterator[None]:
    """Settings, budgets and observed durations live per process: start every test without them."""
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture
def emulator(segmind_emulator_connection: SegmindEmulator) -> SegmindEmulator:
    """A reset, 100x time-scaled emulator with ``segmind_default`` (and SEGMIND_API_KEY) pointing at it."""
    return segmind_emulator_connection


class FakeTaskInstance:
    """Records XCom pushes the way a RuntimeTaskInstance would receive them."""

    def __init__(self, try_number: int = 1) -> None:
        self.xcoms: dict[str, Any] = {}
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeTaskStateStore(dict):  # type: ignore[type-arg]
    """The dict-like slice of Airflow 3.3's TaskStateStoreAccessor the operator uses, kept across tries."""

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        json.dumps(value)  # the real store keeps JSON only
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


@pytest.fixture
def make_context() -> Callable[..., dict[str, Any]]:
    """Build a task context: a fresh TI per try; pass the same ``store`` (and ``try_number``) for a retry."""

    def build(
        store: FakeTaskStateStore | None = None, *, try_number: int = 1, **extra: Any
    ) -> dict[str, Any]:
        context: dict[str, Any] = {"ti": FakeTaskInstance(try_number), **extra}
        if store is not None:
            context["task_state_store"] = store
        return context

    return build


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """What tasks have logged so far (Airflow's task logger writes through structlog, to stdout here)."""
    caplog.set_level("INFO")
    return lambda: caplog.text + "".join(capsys.readouterr())


@pytest.fixture
def state_store() -> FakeTaskStateStore:
    """One task instance's ``task_state_store``, shared by the tries of a test."""
    return FakeTaskStateStore()
