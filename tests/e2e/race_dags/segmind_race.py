"""DAGs that defer and resume within seconds, for Airflow's stale-executor-event race.

apache/airflow#72716: a deferred task's worker exits, its executor reports SUCCESS for that try;
when the scheduler drains that report only after the trigger fired and the resumed attempt is
already queued or running, it fails the task. Each DAG here has ``SEGMIND_RACE_FANOUT`` mapped
tasks that resume a few seconds after deferring. ``bench/stale_event_race.py`` runs them many times
and counts the races (audit log ``state mismatch``) and the failures; ``tests/e2e/test_stale_event_race.py``
runs them a few times in CI.

* ``segmind_race_sensor``: deferrable sensors (``poll_interval=2``) with their default retries;
* ``segmind_race_sensor_no_retries``: the same with ``retries=0``, the sensors before the fix;
* ``segmind_race_operator``: deferrable operators with the retries they default to (none given);
* ``segmind_race_batch``: one batch of ``SEGMIND_RACE_FANOUT`` items, one in flight: a deferral per
  item, again with its default retries.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import DAG, task

from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator
from segmind_provider.sensors.segmind import SegmindRequestSensor

FANOUT = int(os.environ.get("SEGMIND_RACE_FANOUT", "5"))
#: At most half a flux job at the time scales the bench (0.5 by default) and the race test (2.0) use:
#: the trigger polls early, so a task resumes seconds after its job ends (the race's window).
EXPECTED = float(os.environ.get("SEGMIND_EXPECTED_DURATION", "3.5"))
OUT = os.environ.get("SEGMIND_OUTPUT_DIR", "/tmp/segmind-race")
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@task(retries=1, retry_delay=dt.timedelta(seconds=10))
def submit(label: str) -> list[str]:
    """Start the jobs the sensors wait on (someone else's requests, from the sensors' view)."""
    hook = SegmindHook()
    payloads = [{"prompt": f"{label} {i}", "output_format": "png"} for i in range(FANOUT)]
    return [str(hook.submit("flux-1.1-pro", payload)["request_id"]) for payload in payloads]


for dag_id, extra in (("segmind_race_sensor", {}), ("segmind_race_sensor_no_retries", {"retries": 0})):
    with DAG(dag_id=dag_id, start_date=START, schedule=None, catchup=False, tags=["segmind", "race"]):
        SegmindRequestSensor.partial(
            task_id="wait", deferrable=True, poll_interval=2, timeout=1800, **extra
        ).expand(request_id=submit("{{ dag.dag_id }}/{{ run_id }}"))

with DAG(
    dag_id="segmind_race_operator", start_date=START, schedule=None, catchup=False, tags=["segmind", "race"]
):
    # The payload in partial() (templated per task); the mapped argument is where each image goes.
    SegmindOperator.partial(
        task_id="generate",
        model="flux-1.1-pro",
        payload={"prompt": "{{ dag.dag_id }}/{{ run_id }} {{ ti.map_index }}", "output_format": "png"},
        deferrable=True,
        poll_interval=2,
        timeout=1800,
        expected_duration=EXPECTED,
    ).expand(output_path=[f"{OUT}/race/{{{{ run_id }}}}/image-{i}" for i in range(FANOUT)])

with DAG(
    dag_id="segmind_race_batch", start_date=START, schedule=None, catchup=False, tags=["segmind", "race"]
):
    # One batch, one request in flight: a wave per item, each resuming seconds after it deferred.
    SegmindBatchOperator(
        task_id="campaign",
        model="flux-1.1-pro",
        payloads=[
            {"prompt": "{{ dag.dag_id }}/{{ run_id }} " + str(i), "output_format": "png"}
            for i in range(FANOUT)
        ],
        output_dir=f"{OUT}/race/{{{{ run_id }}}}/batch",
        max_in_flight=1,
        deferrable=True,
        worker_wait=0,  # every wave defers: the race is at each resume
        poll_interval=2,
        timeout=1800,
        expected_duration=EXPECTED,
    )
