"""A campaign on a distributed Airflow that loses a triggerer, a Celery worker and its database.

The deployment (``distributed_stack.Stack``): PostgreSQL, Redis, the emulator and Airflow 3 with
``CeleryExecutor`` (api-server, scheduler, dag-processor, two Celery workers, two triggerers), all on
loopback, started by the fixture and removed by it, failures included. Airflow does all the
distributing; the test triggers a run, watches the metadata database, breaks things, and starts
again any component that exits by itself, as Kubernetes or systemd would:

* **a triggerer is SIGKILLed** (its process group) while it holds deferred tasks whose triggers have
  run for at least 2 s; the other takes them over once the dead one's heartbeat is older than
  ``[triggerer] triggerer_health_check_threshold`` (8 s here, heartbeats every 2 s; defaults 30 and 5);
* **a Celery worker is SIGKILLed between submit and defer**: the DAG's test seam stops the first
  generation task ``worker-2`` runs right after the operator submitted and stored its request id,
  and the test kills that worker with every process below it. ``worker-2`` runs one task at a
  time, so no other task can die mid-submit with it, nor sit in its prefetch. Airflow's task
  heartbeat timeout (30 s here, 300 s by default) fails the task; its retry re-attaches;
* **PostgreSQL is stopped** (``pg_ctl -m immediate``, a crash) for 5 s once the takeover is done,
  while tasks still wait.

Once all three are over, the killed triggerer and worker are started again, as their supervisor
would, so the rest of the campaign runs on the full deployment.

Then: the run succeeds, the triggers ran on both triggerers (the ``trigger`` table, polled), every
image is stored once and decodes, the emulator's call log shows exactly one submission per image,
and the retried task paid for nothing new. The figures docs/scaling.md reports are printed on one
line starting ``DISTRIBUTED-E2E`` (``pytest -s``).

The scenario runs once per entry of ``CAMPAIGNS``, each on a fresh deployment: the mapped
``SegmindOperator`` campaign, then the same 60 images as one ``SegmindBatchOperator`` task. The
batch is one task with one trigger per wave, so its faults differ only where they must: the
triggerer is killed once it has held the first wave's trigger for 2 s (there is no spread to wait
for); the worker is killed between the submits and the defer of the next wave, once the first
finished items are stored, and started again at once, since the batch's queue is that worker's.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from distributed_stack import TRIGGERERS, Stack, missing_services
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: Each image "takes" ~42 s (±15 %): the tasks stay deferred through the faults.
TIME_SCALE = 3.0
HEARTBEAT_SEC = 2
HEALTH_CHECK_THRESHOLD = 8
#: A task whose worker died is failed (and retried) once its heartbeat is this old.
TASK_HEARTBEAT_TIMEOUT = 30
#: The worker killed between submit and defer; it runs one task at a time.
HOLDING_WORKER = "worker-2"
OUTAGE_SECONDS = 5.0
#: Triggers one triggerer runs at most. Airflow does not balance: the triggerer whose loop comes
#: round first claims every unassigned trigger up to its capacity (docs/scaling.md: with the default
#: 1000, one of two ran 59 of the 60 tasks' triggers). 20 makes the two share the ~40 waits in flight.
TRIGGERER_CAPACITY = int(os.environ.get("SEGMIND_E2E_TRIGGERER_CAPACITY", "20"))
#: The busier triggerer is killed once it has run a campaign's ``min_orphans`` triggers this long.
HELD_FOR = 2.0
SIZES = {"1:1": (1024, 1024), "16:9": (1360, 768), "4:5": (912, 1152), "3:2": (1248, 832), "2:3": (832, 1248)}
SIZES |= {"9:16": (768, 1360), "4:3": (1184, 880), "3:4": (880, 1184), "5:4": (1152, 912)}


@dataclass(frozen=True)
class Campaign:
    """One DAG the scenario runs: its generation task, how many images it makes, how it is broken."""

    dag_id: str
    images: int
    task_id: str = "generate"
    #: One task for the whole campaign (SegmindBatchOperator) instead of one mapped task per image.
    batch: bool = False
    #: The triggerer is killed only once both triggerers run this campaign's triggers ...
    spread: bool = True
    #: ... and the busier one has run at least this many of them for HELD_FOR seconds.
    min_orphans: int = 5
    #: The killed worker's supervisor starts it again at once (the retry's queue is that worker's).
    worker_back_at_once: bool = False

    def conf(self) -> dict[str, Any]:
        return {"images": self.images}

    def results(self, stack: Stack, run_id: str) -> dict[str, dict[str, Any]]:
        """Each image's ``request_id`` and ``output_uris``, by map index or batch item, from the metadata DB."""
        rows = stack.query(
            "SELECT map_index, value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s "
            "AND key = 'return_value'",
            self.dag_id,
            run_id,
            self.task_id,
        )
        values = {int(i): v if isinstance(v, dict) else json.loads(v) for i, v in rows}
        if self.batch:  # the batch's return value is its manifest
            return dict(values[-1]["items"]) if values else {}
        return {str(i): v for i, v in values.items()}

    def stored_beside(self) -> set[str]:
        """Files the DAG stores in the output folder besides the images."""
        return {"manifest.json"} if self.batch else set()


CAMPAIGNS = (
    Campaign("segmind_e2e_campaign", images=60),
    Campaign(
        "segmind_e2e_campaign_batch",
        images=60,
        task_id="campaign",
        batch=True,
        spread=False,
        min_orphans=1,
        worker_back_at_once=True,
    ),
)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A fresh deployment for each campaign: which process runs which triggerer job is known only
    until the first restart (``Stack.refresh_triggerer_jobs``), and every campaign kills one."""
    missing = missing_services()
    if missing:
        pytest.skip(f"needs Debian's {' and '.join(missing)} (make test installs them when it can)")
    stack = Stack(
        emulator_options={"time_scale": TIME_SCALE, "workers": 256, "call_log_size": 100_000},
        extra_env={
            "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(HEARTBEAT_SEC),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A scheduler restarted after the outage adopts the dead one's tasks this soon (default 300 s).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
        },
        worker_env={HOLDING_WORKER: {"AIRFLOW__CELERY__WORKER_CONCURRENCY": "1"}},
        holding_worker=HOLDING_WORKER,
    )
    try:
        stack.start()
        for campaign in CAMPAIGNS:
            stack.wait_for_dag(campaign.dag_id)
        yield stack
    except BaseException:
        print(stack.describe())
        raise
    finally:
        leftovers = stack.stop()
        assert not leftovers, f"processes outlived the stack: {leftovers}"
        assert not stack.root.exists(), stack.root


@dataclass
class Watch:
    """One run watched from the metadata database, with the faults injected along the way."""

    stack: Stack
    campaign: Campaign
    run_id: str
    began: float = field(default_factory=time.monotonic)
    #: triggerer job id -> map indexes (-1: the batch task) whose trigger it was seen holding
    held: dict[int, set[int]] = field(default_factory=dict)
    first_seen: dict[int, tuple[float, int | None]] = field(default_factory=dict)
    timeline: dict[str, float] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    triggerer: dict[str, Any] = field(default_factory=dict)
    outage_run_state: str | None = None
    final_state: str | None = None
    db_errors: int = 0
    revived: bool = False

    def at(self, event: str) -> None:
        self.timeline[event] = round(time.monotonic() - self.began, 2)

    def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.step()
            except psycopg2.OperationalError:
                self.db_errors += 1  # only while the database is down: the next step reconnects
            if self.final_state:
                return
            time.sleep(0.25)
        raise AssertionError(f"run {self.run_id} did not finish in {timeout:.0f} s: {self.timeline}")

    def step(self) -> None:
        for name in self.stack.restart_exited():
            self.at(f"restarted_{name}_{self.stack.restarts[name]}")
        triggers = self.trigger_assignments()
        now = time.monotonic()
        for trigger_id, (index, job) in triggers.items():
            if job is not None:
                self.held.setdefault(job, set()).add(index)
            if self.first_seen.get(trigger_id, (0.0, None))[1] != job:
                self.first_seen[trigger_id] = (now, job)
        if triggers and "first_deferred" not in self.timeline:
            self.at("first_deferred")
        if not self.triggerer:
            self.maybe_kill_triggerer(triggers, now)
        elif "takeover" not in self.timeline:
            self.check_takeover(triggers)
        if not self.worker:
            self.maybe_kill_worker()
        elif self.campaign.worker_back_at_once and HOLDING_WORKER in self.stack.killed:
            for name in self.stack.revive(HOLDING_WORKER):
                self.at(f"revived_{name}")
        if "takeover" in self.timeline and self.outage_run_state is None:
            self.stop_database()
        if self.worker and self.outage_run_state is not None and not self.revived:
            self.revive_when_done()
        state = self.run_state()
        if state in ("success", "failed"):
            self.final_state = state
            self.at(state)

    # ------------------------------------------------------------------ observation

    def run_state(self) -> str | None:
        rows = self.stack.query(
            "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", self.campaign.dag_id, self.run_id
        )
        return rows[0][0] if rows else None

    def trigger_assignments(self) -> dict[int, tuple[int, int | None]]:
        """trigger id -> (map index, triggerer job id or None) for this run's deferred tasks."""
        rows = self.stack.query(
            "SELECT tr.id, ti.map_index, tr.triggerer_id FROM task_instance ti JOIN trigger tr "
            "ON ti.trigger_id = tr.id WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
            self.campaign.dag_id,
            self.run_id,
            self.campaign.task_id,
        )
        return {int(t): (int(i), None if j is None else int(j)) for t, i, j in rows}

    def tasks(self) -> dict[int, tuple[str | None, int]]:
        """map index -> (state, try number) of the generation tasks."""
        rows = self.stack.query(
            "SELECT map_index, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s "
            "AND task_id = %s",
            self.campaign.dag_id,
            self.run_id,
            self.campaign.task_id,
        )
        return {int(i): (s, int(t)) for i, s, t in rows}

    # ------------------------------------------------------------------ faults

    def maybe_kill_triggerer(self, triggers: dict[int, tuple[int, int | None]], now: float) -> None:
        """Kill the busier triggerer once both run triggers (where the campaign spreads), it has run
        ``min_orphans`` for HELD_FOR seconds, and the other has room for all of them (so the takeover
        measures the handover, not capacity)."""
        self.stack.refresh_triggerer_jobs()
        jobs = self.stack.triggerer_job
        live = self.stack.live_triggerers()
        if len(jobs) < len(TRIGGERERS) or not set(jobs.values()) <= live:
            return
        held: dict[int, dict[int, int]] = {job: {} for job in jobs.values()}
        for trigger_id, (index, job) in triggers.items():
            if job in held:
                held[job][trigger_id] = index
        spread = min(len(h) for h in held.values()) >= 1
        if (self.campaign.spread and not spread) or sum(map(len, held.values())) > TRIGGERER_CAPACITY:
            return
        victim = max(TRIGGERERS, key=lambda name: len(held[jobs[name]]))
        dead = jobs[victim]
        orphans = {t: i for t, i in held[dead].items() if now - self.first_seen[t][0] >= HELD_FOR}
        if len(orphans) < self.campaign.min_orphans:
            return
        survivor = next(name for name in TRIGGERERS if name != victim)
        self.stack.kill(victim)
        killed_at_db = self.stack.query("SELECT now()")[0][0]  # after it died: no later beat of its job
        self.at("triggerer_killed")
        self.triggerer = {
            "name": victim,
            "job": dead,
            "survivor_job": jobs[survivor],
            "orphans": orphans,
            "held": {job: len(h) for job, h in held.items()},
            "killed_at": time.monotonic(),
            "killed_at_db": killed_at_db,
        }

    def check_takeover(self, triggers: dict[int, tuple[int, int | None]]) -> None:
        """Taken over when no trigger the dead triggerer held is still assigned to it."""
        dead, survivor = self.triggerer["job"], self.triggerer["survivor_job"]
        orphans = self.triggerer["orphans"]
        if any(triggers.get(t, (0, None))[1] == dead for t in orphans):
            return
        self.triggerer["takeover_s"] = round(time.monotonic() - self.triggerer["killed_at"], 2)
        self.triggerer["seen_with_survivor"] = sorted(
            orphans[t] for t in orphans if triggers.get(t, (0, None))[1] == survivor
        )
        self.at("takeover")

    def maybe_kill_worker(self) -> None:
        """Kill HOLDING_WORKER as soon as a task of this campaign stops there between submit and defer."""
        marker = self.stack.hold_dir / f"{self.campaign.dag_id}.json"
        if not marker.exists():
            return
        held = json.loads(marker.read_text())
        task_processes = [p.pid for p in self.stack.tree(HOLDING_WORKER) if _leads_its_group(p.pid)]
        assert task_processes == [held["pid"]], f"{HOLDING_WORKER} runs more than the held task: {held}"
        self.stack.kill(HOLDING_WORKER)
        self.at("worker_killed")
        self.worker = held

    def stop_database(self) -> None:
        self.outage_run_state = self.run_state() or "unknown"
        self.at("database_stopped")
        self.stack.postgres.stop("immediate")  # a crash, as a failover looks to its clients
        time.sleep(OUTAGE_SECONDS)
        self.stack.postgres.start()
        self.at("database_started")
        for name in self.stack.restart_exited():
            self.at(f"restarted_{name}_{self.stack.restarts[name]}")

    def revive_when_done(self) -> None:
        """The faults are over: what was killed comes back, as Kubernetes would restart it."""
        for name in self.stack.revive():
            self.at(f"revived_{name}")
        self.revived = True


def _leads_its_group(pid: int) -> bool:
    """Airflow's supervisor puts each task process in a process group of its own."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _task_logs(stack: Stack, campaign: Campaign, run_id: str, index: int) -> Path:
    """The folder of one task's logs (``map_index=`` only for a mapped task, as Airflow names it)."""
    folder = (
        stack.home / "logs" / f"dag_id={campaign.dag_id}" / f"run_id={run_id}" / f"task_id={campaign.task_id}"
    )
    return folder / f"map_index={index}" if index >= 0 else folder


def task_log(stack: Stack, campaign: Campaign, run_id: str, index: int, attempt: int) -> str:
    path = _task_logs(stack, campaign, run_id, index) / f"attempt={attempt}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def fired_by(stack: Stack, campaign: Campaign, run_id: str, index: int) -> set[int]:
    """Triggerer job ids whose trigger log for this task records a fired event.

    The triggerer writes a trigger's log beside the task's, as ``attempt=N.log.trigger.<job id>.log``.
    """
    jobs = set()
    for path in _task_logs(stack, campaign, run_id, index).glob("attempt=*.log.trigger.*.log"):
        if "Trigger fired event" in path.read_text(errors="replace"):
            jobs.add(int(path.name.rsplit(".", 2)[-2]))
    return jobs


def check_images(stack: Stack, campaign: Campaign, run_id: str) -> dict[str, str]:
    """Every image stored once, where the task said, decodable, at a model size; its request id."""
    results = campaign.results(stack, run_id)
    assert len(results) == campaign.images, sorted(results)
    request_ids = {item: str(r["request_id"]) for item, r in results.items()}
    assert len(set(request_ids.values())) == campaign.images, "two images share a Segmind request"
    stored = [Path(uri.removeprefix("file://")) for r in results.values() for uri in r["output_uris"]]
    assert len(stored) == campaign.images
    folder = stack.output / run_id
    beside = {folder / name for name in campaign.stored_beside()}
    assert sorted(folder.iterdir()) == sorted([*stored, *beside]), "a file other than the images was left"
    for path in stored:
        with Image.open(path) as image:
            image.load()
            assert image.size in SIZES.values(), (path, image.size)
    return request_ids


@pytest.mark.parametrize(
    "campaign",
    # The mapped campaign in `make test`; the batch one, on its own fresh stack, in `make test-e2e`.
    [pytest.param(c, marks=[pytest.mark.slow] if c.batch else []) for c in CAMPAIGNS],
    ids=lambda c: "batch" if c.batch else "mapped",
)
def test_a_campaign_survives_a_lost_triggerer_a_lost_worker_and_a_database_outage(
    stack: Stack, campaign: Campaign
) -> None:
    run_id = f"distributed-{campaign.dag_id}"
    emulator_before = stack.emulator.stats()
    since = int(emulator_before["calls_total"])
    cpu_before = stack.cpu_seconds()
    stack.trigger(campaign.dag_id, run_id, campaign.conf())
    watch = Watch(stack, campaign, run_id)
    try:
        watch.run(timeout=420)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.describe()}") from None
    tasks = watch.tasks()
    retried = {i: t for i, (_, t) in tasks.items() if t > 1}
    submissions = [c for c in stack.emulator.calls(endpoint="submit", since=since) if c["method"] == "POST"]
    downloads = Counter(
        c["path"].rsplit("/", 1)[-1].split(".")[0]
        for c in stack.emulator.calls(endpoint="media", since=since)
        if c["status"] == 200
    )
    jobs_made = stack.emulator.stats()["jobs"] - emulator_before["jobs"]
    figures = {
        "campaign": campaign.dag_id,
        "stack_up_s": round(stack.started_in or 0, 1),
        "takeover_s": watch.triggerer.get("takeover_s"),
        "orphaned_triggers": len(watch.triggerer.get("orphans", ())),
        "triggers_held": {job: len(held) for job, held in watch.held.items()},
        "submissions": len(submissions),
        "duplicate_submissions": len(submissions) - campaign.images,
        "downloads_beyond_one": sum(n - 1 for n in downloads.values()),
        "retried_tasks": retried,
        "timeline_s": watch.timeline,
        "db_errors_seen_by_test": watch.db_errors,
        "restarts": dict(stack.restarts),
        "cpu_s": _cpu_since(stack, cpu_before),
        "worker_slot_s": _slot_seconds(stack.workloads(campaign.dag_id, run_id)),
    }
    print("\nDISTRIBUTED-E2E " + json.dumps(figures, default=str))
    context = f"{figures}\nworker {watch.worker}\ntriggerer {watch.triggerer}"

    assert watch.final_state == "success", f"{context}\n{stack.describe()}"
    assert {state for state, _ in tasks.values()} == {"success"}, tasks

    # The triggers were spread over both triggerers (the trigger table, polled during the run).
    assert watch.triggerer, f"the triggers never ran on both triggerers at once: {watch.held}"
    assert all(watch.triggerer["held"].values()) or not campaign.spread, watch.triggerer["held"]
    assert len(watch.held) >= len(TRIGGERERS), watch.held

    # A triggerer died holding deferred tasks; the survivor took every one of them over and fired it.
    assert watch.triggerer.get("takeover_s") is not None, context
    dead, survivor = watch.triggerer["job"], watch.triggerer["survivor_job"]
    (beat,) = stack.query("SELECT latest_heartbeat FROM job WHERE id = %s", dead)[0]
    assert beat <= watch.triggerer["killed_at_db"], (
        f"job {dead} beat after its process was killed: not its job"
    )
    for index in watch.triggerer["orphans"].values():
        fired = fired_by(stack, campaign, run_id, index)
        assert fired and dead not in fired, (index, fired, dead, survivor)

    # A worker died between submit and defer; Airflow retried the task, which re-attached.
    assert watch.worker, f"the held task's worker was never killed\n{context}"
    held_index = watch.worker["map_index"]
    assert tasks[held_index][1] == 2, tasks[held_index]
    # The database went down mid-run, and the run went on.
    assert watch.outage_run_state == "running", context

    # Every image stored once and valid; one paid job each, the retried task's included.
    request_ids = check_images(stack, campaign, run_id)
    held_requests = set(watch.worker["request_ids"])
    assert held_requests and held_requests <= set(request_ids.values()), "the retry paid for new jobs"
    if campaign.batch:  # the retry said so: the whole killed wave re-attached, none found in the history
        retry_log = task_log(stack, campaign, run_id, held_index, attempt=2)
        assert f"Re-attached to {len(held_requests)} requests an earlier try submitted" in retry_log
        assert "request history that a killed try had not recorded" not in retry_log
        # This run paid for every image, those its killed try stored (reused by the retry) included.
        costs = {key: entry["cost"] for key, entry in campaign.results(stack, run_id).items()}
        assert all(cost and cost > 0 for cost in costs.values()), costs
    else:
        assert request_ids[str(held_index)] in held_requests, "the retry paid for a new job"
    assert len(submissions) == campaign.images, f"{len(submissions)} submissions; retried tasks {retried}"
    assert jobs_made == campaign.images
    assert set(downloads) == set(request_ids.values()), "an image was never downloaded"
    assert stack.api_key not in _all_logs(stack), "the API key reached a log"


def _cpu_since(stack: Stack, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each service used in this run (a component started again counts from its restart)."""
    after = stack.cpu_seconds()
    return {
        name: round(s - before.get(name, 0.0) if s >= before.get(name, 0.0) else s, 1)
        for name, s in after.items()
    }


def _slot_seconds(workloads: list[tuple[str, float]]) -> dict[str, Any]:
    """Worker slot time per task try, by how the try ended (deferred: submit or a wave; success: finish)."""
    by_state: dict[str, list[float]] = {}
    for state, seconds in workloads:
        by_state.setdefault(state, []).append(seconds)
    return {s: {"tries": len(v), "mean": round(sum(v) / len(v), 1)} for s, v in by_state.items()}


def _all_logs(stack: Stack) -> str:
    paths = [*stack.logs.values(), *(stack.home / "logs").rglob("*.log")]
    return "\n".join(p.read_text(errors="replace") for p in paths if p.is_file())
