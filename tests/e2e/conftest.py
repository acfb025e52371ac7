"""What the end-to-end tests share, each made once per session.

``dags_emulator`` and ``airflow_env``: the time-scaled emulator in this process and a migrated
AIRFLOW_HOME whose ``segmind_default`` points at it, for every `airflow dags test` test.

``deployment``: the real deployment (``airflow standalone``), shared by every test that needs one
(it takes ~20 s to start).

``nightly_run`` is a night's run (three products), stopped at its approval step: the browser test looks at
that step in the Airflow UI (and approves there); ``published_run`` is the same run once approved
(through the REST API if nobody did yet) and finished, for the tests that check what it published.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from airflow_deployment import (
    BLOCKED_PRODUCT,
    Deployment,
    NightlyRun,
    catalog,
    catalog_ids,
    deployed,
    watch_run,
)
from browser import chromium_binary as chromium_binary
from dags_runner import TIME_SCALE, migrated_home

from segmind_provider.testing.emulator.runner import SegmindEmulator


@pytest.fixture(scope="session")
def dags_emulator() -> Iterator[SegmindEmulator]:
    with SegmindEmulator(time_scale=TIME_SCALE) as emu:
        yield emu


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, dags_emulator: SegmindEmulator) -> dict[str, str]:
    """The connection comes from ``AIRFLOW_CONN_SEGMIND_DEFAULT`` (both lookups find those)."""
    home = tmp_path_factory.mktemp("airflow_home")
    return migrated_home(
        home,
        {
            "AIRFLOW_CONN_SEGMIND_DEFAULT": dags_emulator.connection_json(),
            "SEGMIND_E2E_PHOTO": str(home / "photo.png"),
            "SEGMIND_E2E_LABEL": str(home / "label.png"),
        },
    )


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("airflow-e2e")) as running:
        yield running


@pytest.fixture(scope="session")
def nightly_run(deployment: Deployment) -> NightlyRun:
    """A night with every path of the pipeline (the hero with its upscale and clip, a product the
    emulator content-blocks, a plain one), watched until its approval step waits for a reviewer.

    Three products rather than the catalog's six keep the suite short: the other products add
    nothing these three do not exercise (``make demo`` runs all six)."""
    run_id, day = "e2e-nightly", "2026-03-02"
    hero = catalog()["hero"]
    products = [p for p in catalog_ids() if p in (hero, BLOCKED_PRODUCT)]
    products.insert(1, next(p for p in catalog_ids() if p not in products))
    first_seq = deployment.last_call_seq()
    deployment.trigger(run_id, f"{day}T06:00:00+00:00", products)
    observed = watch_run(deployment, run_id, timeout=300, until_review=True)
    ordered = [p for p in catalog_ids() if p in products]  # map indexes follow the catalog's order
    return NightlyRun(run_id, day, ordered, first_seq, observed)


@pytest.fixture(scope="session")
def published_run(deployment: Deployment, nightly_run: NightlyRun) -> NightlyRun:
    """The nightly run approved (here, unless a test approved it in the UI already) and finished."""
    if deployment.awaiting_review(nightly_run.run_id):
        deployment.answer_review(nightly_run.run_id)
    watch_run(deployment, nightly_run.run_id, timeout=180, observed=nightly_run.observed)
    return nightly_run
