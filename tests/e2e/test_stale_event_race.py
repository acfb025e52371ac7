"""Deferrable sensors and operators that resume seconds after deferring, on a real deployment.

Airflow's stale-executor-event race (apache/airflow#72716) can fail such a task right after it
resumed; a retry carries it through (the sensor has retries by default; the operator re-attaches).
CI runs a few of them; ``bench/stale_event_race.py`` runs 50+ of each and counts the races
(docs/reliability.md). Every task must end ``success``, and no operator job is paid twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_deployment import Deployment, deployed
from processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

RACE_DAGS = Path(__file__).parent / "race_dags"
FANOUT = 3
#: ~28 s a job: still running when a sensor first pokes, so it defers. Under load a sensor's first
#: poke came 13-15 s after its job was submitted (the worker parses the DAG file first): a 7 s job was
#: done by then and no sensor deferred.
TIME_SCALE = 2.0
DAGS = ("segmind_race_sensor", "segmind_race_operator", "segmind_race_batch")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("airflow-race")
    options = {"dags": RACE_DAGS, "dag_ids": DAGS, "extra_env": {"SEGMIND_RACE_FANOUT": str(FANOUT)}}
    with deployed(root, **options) as running:
        yield running


def test_deferrable_sensors_and_operators_resume_and_succeed(deployment: Deployment) -> None:
    deployment.emulator("PATCH", "/config", {"time_scale": TIME_SCALE})
    first_seq = deployment.last_call_seq()
    runs = [(dag_id, f"ci-{dag_id}-{n}") for n in range(2) for dag_id in DAGS]
    for dag_id, run_id in runs:
        deployment.trigger_dag(dag_id, run_id, {})

    def finished() -> bool:
        states = [
            deployment.query("SELECT state FROM dag_run WHERE run_id = ?", run_id) for _, run_id in runs
        ]
        return all(rows and rows[0][0] in ("success", "failed") for rows in states)

    wait_until(finished, 420, "the race DAG runs to finish", interval=1)
    tasks = deployment.query(
        "SELECT dag_id, run_id, task_id, map_index, state, try_number FROM task_instance "
        "WHERE task_id IN ('wait', 'generate', 'campaign')"
    )
    assert len(tasks) == len(runs) // len(DAGS) * (2 * FANOUT + 1)  # the batch is one task per run
    # Operators and the batch leave retries at their default (Airflow's is 0): the race must not fail them.
    assert {row[4] for row in tasks} == {"success"}, tasks
    deferred = dict(
        deployment.query(
            "SELECT task_id, count(DISTINCT dag_id || run_id || map_index) FROM log "
            "WHERE event = 'deferred' AND task_id IN ('wait', 'generate', 'campaign') GROUP BY task_id"
        )
    )
    assert deferred.get("generate") == 2 * FANOUT  # every operator waited in the triggerer
    assert deferred.get("campaign") == 2  # both batch runs deferred (a wave per item)
    assert deferred.get("wait", 0) >= 1  # and sensors did (one finding its job done need not)
    # One paid job per task or item, retries included (the sensors' jobs come from their 'submit' task).
    assert len(deployment.submissions_since(first_seq)) == len(runs) * FANOUT
