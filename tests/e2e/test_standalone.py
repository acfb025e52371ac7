"""The content pipeline on a real Airflow deployment, with the emulator standing in for Segmind.

One deployment per module, in a temporary ``AIRFLOW_HOME``: api-server, scheduler, dag-processor
and triggerer as separate processes (LocalExecutor, SQLite), each in its own process group so any
of them can be killed alone and all of them are killed at the end, failures included.

* ``test_generation_defers_and_the_triggerer_resumes_it``: every generation task entered
  ``deferred`` (Airflow's audit log) and its trigger fired in the triggerer (the trigger log the
  triggerer writes as ``attempt=N.log.trigger.<triggerer job id>.log``), the run succeeds although
  one product is content-blocked, and every image and format is valid at its expected size.
* ``test_a_killed_triggerer_loses_no_image_and_pays_for_none_twice``: the triggerer is SIGKILLed
  while it polls deferred tasks, a new one takes the orphaned triggers over and fires them, the run
  completes, and the emulator's call log shows exactly one submission per image.

Task states are read from the deployment's SQLite database, read-only, in short transactions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image
from processes import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "segmind_content_pipeline"
BLOCKED_WORD = "headlamp"  # the catalog's aurora-headlamp product is content-blocked by the emulator
BLOCKED_PRODUCT = "aurora-headlamp"
FLUX_SECONDS = 14.05
POOL_SLOTS = 6
# Scenario 1: ~3.5 s per image, long enough to see each task deferred, short enough to keep the run quick.
FAST_SCALE = 0.25
# Scenario 2: ~14 s per image, so the tasks are surely still deferred when the triggerer is killed.
SLOW_SCALE = 1.0
FORMAT_SIZES = {
    "square": (1080, 1080),
    "story": (1080, 1920),
    "link_card": (1200, 628),
    "thumbnail": (360, 360),
}
READY_PREFIX = "SEGMIND_EMULATOR_READY "

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _catalog_ids() -> list[str]:
    catalog = json.loads((DAGS / "data" / "campaign_catalog.json").read_text())
    return [str(p["id"]) for p in catalog["products"]]


@dataclass
class Deployment:
    """Airflow components and the emulator, started and stopped as process groups."""

    home: Path
    output: Path
    api_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    retired: list[subprocess.Popen[Any]] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)
    emulator_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    dags: Path = DAGS
    dag_ids: tuple[str, ...] = (DAG_ID,)
    parallelism: int = POOL_SLOTS
    #: A key no text could hold by chance: the secrets scan looks for it everywhere.
    api_key: str = field(default_factory=lambda: f"e2e-key-{secrets.token_hex(16)}")
    extra_env: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ processes

    def _start(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        log_path = self.home / "e2e-logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if name in self.logs:  # a second triggerer: keep the first one's log
            log_path = log_path.with_name(f"{name}-{len(self.retired) + 1}.log")
        self.logs[name] = log_path
        log: IO[str] = open(log_path, "w")  # noqa: SIM115 - closed when the process is reaped
        kwargs.setdefault("stdout", log)
        proc = subprocess.Popen(
            list(argv),
            env=self.env,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.home,
            **kwargs,
        )
        self.procs[name] = proc
        return proc

    def _airflow(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command to completion; its output on failure."""
        result = subprocess.run(
            [self.airflow, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    @property
    def airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def start(self) -> None:
        self.env = self._environment()
        self._start_emulator()
        self.env["AIRFLOW_CONN_SEGMIND_DEFAULT"] = json.dumps(
            {"conn_type": "segmind", "host": self.emulator_url, "password": self.api_key}
        )
        self._airflow("db", "migrate")
        self._airflow("pools", "set", "segmind", str(POOL_SLOTS), "Segmind jobs", "--include-deferred")
        self._start("api-server", [self.airflow, "api-server", "--port", str(self.api_port)])
        self._start("dag-processor", [self.airflow, "dag-processor"])
        self._start("scheduler", [self.airflow, "scheduler"])
        self.start_triggerer()
        wait_until(self._api_healthy, 120, "the api-server to answer its health check", interval=1)
        for dag_id in self.dag_ids:
            wait_until(
                lambda dag_id=dag_id: self.query(
                    "SELECT 1 FROM dag WHERE dag_id = ? AND is_paused = 0", dag_id
                ),
                120,
                f"the dag-processor to register {dag_id} (unpaused)",
                interval=1,
            )

    def start_triggerer(self) -> subprocess.Popen[Any]:
        old = self.procs.get("triggerer")
        if old is not None:
            self.retired.append(old)
        return self._start("triggerer", [self.airflow, "triggerer"])

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group (the triggerer's runner subprocess included)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        everything = [*self.procs.values(), *self.retired]
        for proc in everything:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in everything:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers: task processes, runner subprocesses
            proc.wait(timeout=30)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SEGMIND_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # Only the runs this test triggers: no run for the daily schedule's latest interval.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # A killed triggerer's triggers are handed over once its heartbeat is this old.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
                "SEGMIND_OUTPUT_DIR": str(self.output),
                "SEGMIND_EXPECTED_DURATION": f"{FLUX_SECONDS * FAST_SCALE:.3f}",
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            }
        )
        return env

    def _start_emulator(self) -> None:
        argv = [sys.executable, "-m", "segmind_provider.testing.emulator", "--port", "0"]
        argv += ["--time-scale", str(FAST_SCALE), "--block-word", BLOCKED_WORD]
        proc = self._start("emulator", argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = wait_until(proc.stdout.readline, 30, "the emulator to start", interval=0)
        assert line.startswith(READY_PREFIX), line
        self.emulator_url = json.loads(line[len(READY_PREFIX) :])["base_url"]

    def _api_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    # ------------------------------------------------------------------ observation

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB read-only; a busy database is retried, never written to."""
        uri = f"file:{self.home / 'airflow.db'}?mode=ro"
        for _ in range(50):
            try:
                with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                    return list(db.execute(sql, params).fetchall())
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.1)
        raise AssertionError("the metadata database stayed locked")

    def emulator(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.emulator_url}/_emulator{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def submissions_since(self, seq: int) -> list[dict[str, Any]]:
        calls = self.emulator("GET", f"/calls?endpoint=submit&since={seq}")
        return [c for c in calls if c["method"] == "POST" and c["path"].startswith("/v2/")]

    def last_call_seq(self) -> int:
        calls = self.emulator("GET", "/calls")
        return max((int(c["seq"]) for c in calls), default=0)

    def trigger(self, run_id: str, logical_date: str, products: list[str] | None = None) -> None:
        self.trigger_dag(DAG_ID, run_id, {"products": products or []}, logical_date)

    def trigger_dag(
        self, dag_id: str, run_id: str, conf: dict[str, Any], logical_date: str | None = None
    ) -> None:
        args = ["dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf)]
        self._airflow(*args, *(["--logical-date", logical_date] if logical_date else []))

    def run_state(self, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, run_id)
        return rows[0][0] if rows else None

    def task_states(self, run_id: str, task_id: str) -> dict[int, str | None]:
        rows = self.query(
            "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            DAG_ID,
            run_id,
            task_id,
        )
        return {int(index): state for index, state in rows}

    def deferred_with_triggerer(self, run_id: str) -> dict[int, int | None]:
        """Generation tasks deferred right now, and the triggerer job holding each one's trigger."""
        rows = self.query(
            "SELECT ti.map_index, tr.triggerer_id FROM task_instance ti JOIN trigger tr ON ti.trigger_id = tr.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = 'generate' AND ti.state = 'deferred'",
            DAG_ID,
            run_id,
        )
        return {int(index): triggerer for index, triggerer in rows}

    def triggerer_jobs(self) -> list[tuple[int, str, str | None]]:
        return [
            (int(i), str(s), h)
            for i, s, h in self.query(
                "SELECT id, state, hostname FROM job WHERE job_type = 'TriggererJob' ORDER BY id"
            )
        ]

    def audit_events(self, run_id: str, task_id: str, event: str) -> set[int]:
        """Map indexes with this event in Airflow's audit log (the ``log`` table)."""
        rows = self.query(
            "SELECT DISTINCT map_index FROM log WHERE dag_id = ? AND run_id = ? AND task_id = ? AND event = ?",
            DAG_ID,
            run_id,
            task_id,
            event,
        )
        return {int(r[0]) for r in rows}

    def fired_by(self, run_id: str, map_index: int) -> set[int]:
        """Triggerer job ids whose trigger log for this generation task records a fired event.

        The triggerer writes each trigger's log next to the task's, as
        ``attempt=N.log.trigger.<triggerer job id>.log``.
        """
        folder = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=generate"
        jobs = set()
        for path in (folder / f"map_index={map_index}").glob("attempt=*.log.trigger.*.log"):
            text = path.read_text(errors="replace")
            # The trigger's own lines (its module logger) reach this task's trigger log too.
            if "Trigger fired event" in text and re.search(r"Segmind request \S+: \w+ after \d+ polls", text):
                jobs.add(int(path.name.rsplit(".", 2)[-2]))
        return jobs

    def try_numbers(self, run_id: str, task_id: str) -> dict[int, int]:
        rows = self.query(
            "SELECT map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            DAG_ID,
            run_id,
            task_id,
        )
        return {int(i): int(t) for i, t in rows}

    def describe(self, run_id: str) -> str:
        """What to print when a scenario fails: states, and the tail of every component's log."""
        lines = [f"run {run_id}: {self.run_state(run_id)}"]
        for task_id in ("plan", "generate", "render", "publish"):
            lines.append(f"  {task_id}: {self.task_states(run_id, task_id)}")
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            lines.append(f"--- {name} ({path}) ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(lines)


@contextlib.contextmanager
def deployed(root: Path, **options: Any) -> Iterator[Deployment]:
    """A started deployment under ``root`` (its home and output inside), stopped on the way out."""
    deployment = Deployment(home=root / "home", output=root / "output", **options)
    deployment.home.mkdir()
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("airflow-e2e")) as running:
        yield running


@dataclass
class Observed:
    """What a watch over one run saw: every generation task seen deferred, and by which triggerer."""

    deferred: dict[int, set[int | None]] = field(default_factory=dict)
    final_state: str | None = None

    def add(self, snapshot: dict[int, int | None]) -> None:
        for index, triggerer in snapshot.items():
            self.deferred.setdefault(index, set()).add(triggerer)


def watch_run(
    deployment: Deployment, run_id: str, timeout: float, on_poll: Callable[[Observed], None] | None = None
) -> Observed:
    observed = Observed()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        observed.add(deployment.deferred_with_triggerer(run_id))
        if on_poll is not None:
            on_poll(observed)
        state = deployment.run_state(run_id)
        if state in ("success", "failed"):
            observed.final_state = state
            return observed
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not finish in {timeout:.0f} s\n{deployment.describe(run_id)}")


def check_published(deployment: Deployment, day: str, products: list[str]) -> dict[str, Any]:
    """The manifest lists every product; each published one has a valid original and four formats."""
    folder = deployment.output / "published" / day
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["product_id"] for p in manifest["products"]] == products
    assert (folder / "index.html").is_file()
    for product in manifest["products"]:
        if product["product_id"] == BLOCKED_PRODUCT:
            assert product["status"] == "failed"
            assert "content" in product["error"].lower() or "blocked" in product["error"].lower()
            assert product["request_id"]
            continue
        assert product["status"] == "published", product
        assert product["request_id"] and product["inference_time"]
        with Image.open(folder / product["files"]["original"]) as original:
            original.load()
            width, height = original.size
            ratio_w, ratio_h = (int(x) for x in product["aspect_ratio"].split(":"))
            assert abs(width / height - ratio_w / ratio_h) < 0.03, (product["product_id"], original.size)
        for name, size in FORMAT_SIZES.items():
            with Image.open(folder / product["files"][name]) as image:
                image.load()
                assert image.size == size, (product["product_id"], name, image.size)
    return manifest


def test_generation_defers_and_the_triggerer_resumes_it(deployment: Deployment) -> None:
    products = _catalog_ids()
    run_id, day = "e2e-deferral", "2026-03-02"
    first_seq = deployment.last_call_seq()
    deployment.trigger(run_id, f"{day}T06:00:00+00:00")
    observed = watch_run(deployment, run_id, timeout=240)
    context = deployment.describe(run_id)

    assert observed.final_state == "success", context
    blocked = products.index(BLOCKED_PRODUCT)
    everyone = set(range(len(products)))
    generate = deployment.task_states(run_id, "generate")
    assert generate == {i: ("failed" if i == blocked else "success") for i in everyone}, context
    assert set(deployment.task_states(run_id, "render").values()) == {"success"}, context
    assert deployment.task_states(run_id, "publish") == {-1: "success"}, context

    # Every generation task entered the deferred state (Airflow's audit log records each deferral) ...
    assert deployment.audit_events(run_id, "generate", "deferred") == everyone, context
    # ... and the triggerer process's job fired every one of their triggers ...
    triggerer_jobs = {job_id for job_id, _, _ in deployment.triggerer_jobs()}
    for index in everyone:
        fired = deployment.fired_by(run_id, index)
        assert fired and fired <= triggerer_jobs, (index, fired, triggerer_jobs)
    # ... which the polling saw holding the deferred tasks' triggers, and none is left behind.
    assert {job for jobs in observed.deferred.values() for job in jobs} & triggerer_jobs, observed.deferred
    assert deployment.query("SELECT count(*) FROM trigger")[0][0] == 0

    manifest = check_published(deployment, day, products)
    assert manifest["counts"] == {"total": 12, "published": 11, "failed": 1}
    # One submission per product. A known Airflow race (apache/airflow#72716) can fail a task just
    # after it resumed; its retry re-attaches to the request (no new submission) for an image, but
    # the content-blocked product's retry submits again, since a FAILED request is not reusable.
    tries = deployment.try_numbers(run_id, "generate")
    retried = {products[i]: t for i, t in tries.items() if t > 1}
    assert len(deployment.submissions_since(first_seq)) == len(products) + tries[blocked] - 1, (
        f"a generation task submitted twice; retried tasks: {retried}. A retry must re-attach to the "
        "request its earlier try left in task_state_store, even when that try had finished"
    )


def test_a_killed_triggerer_loses_no_image_and_pays_for_none_twice(deployment: Deployment) -> None:
    products = [p for p in _catalog_ids() if p != BLOCKED_PRODUCT][:POOL_SLOTS]
    run_id, day = "e2e-triggerer-kill", "2026-03-03"
    deployment.emulator("PATCH", "/config", {"time_scale": SLOW_SCALE})
    first_seq = deployment.last_call_seq()
    old_triggerer_jobs = {job_id for job_id, _, _ in deployment.triggerer_jobs()}
    deployment.trigger(run_id, f"{day}T06:00:00+00:00", products)

    killed: dict[str, Any] = {}

    def kill_when_deferred(observed: Observed) -> None:
        if killed:
            return
        held = deployment.deferred_with_triggerer(run_id)
        if len(held) < 2 or not all(job in old_triggerer_jobs for job in held.values()):
            return
        # Mid-wait: the old triggerer is already polling (only triggers poll the status endpoint).
        polls = deployment.emulator("GET", f"/calls?endpoint=status&since={first_seq}")
        if polls:
            deployment.kill("triggerer")
            killed.update(deferred=dict(held), polls_before=len(polls))
            deployment.start_triggerer()

    try:
        observed = watch_run(deployment, run_id, timeout=300, on_poll=kill_when_deferred)
    finally:
        deployment.emulator("PATCH", "/config", {"time_scale": FAST_SCALE})
    context = deployment.describe(run_id)

    assert killed, f"the triggerer never held two deferred tasks while polling\n{context}"
    assert killed["polls_before"] > 0
    assert observed.final_state == "success", context
    assert set(deployment.task_states(run_id, "generate").values()) == {"success"}, context
    # Every task deferred when the triggerer died had its trigger fired by the new triggerer's job.
    new_jobs = {job_id for job_id, _, _ in deployment.triggerer_jobs()} - old_triggerer_jobs
    assert new_jobs, deployment.triggerer_jobs()
    for index in killed["deferred"]:
        fired = deployment.fired_by(run_id, index)
        assert fired & new_jobs and not fired & old_triggerer_jobs, (index, fired, new_jobs, context)
    # Exactly one submission per image: the restart re-polled, it never re-submitted.
    retried = {products[i]: t for i, t in deployment.try_numbers(run_id, "generate").items() if t > 1}
    assert len(deployment.submissions_since(first_seq)) == len(products), f"retried tasks: {retried}"
    check_published(deployment, day, products)


def _readable(text: str, home: Path) -> str:
    """Trigger kwargs as stored: plain JSON, or Fernet-encrypted with the deployment's key."""
    if text.startswith("{"):
        return text
    import configparser

    from cryptography.fernet import Fernet

    config = configparser.ConfigParser(interpolation=None)
    config.read(home / "airflow.cfg")
    return Fernet(config["core"]["fernet_key"].encode()).decrypt(text.encode()).decode()


def test_the_api_key_is_in_no_log_and_no_database_row(deployment: Deployment) -> None:
    """Issue 10, secrets. After the runs above and one more (watched while its tasks are deferred,
    since a fired trigger's row is deleted), the key is in no file the deployment wrote (component,
    task and trigger logs, outputs, the database file) and in no row of the metadata database
    (trigger kwargs, XCom, rendered fields, next_kwargs, task state); the emulator saw it only on
    Segmind's hosts, never on the media host."""
    products = [p for p in _catalog_ids() if p != BLOCKED_PRODUCT][:2]
    run_id = "e2e-secrets"
    deployment.trigger(run_id, "2026-03-04T06:00:00+00:00", products)
    deferred_rows: list[str] = []

    def snapshot(_: Observed) -> None:
        kwargs = deployment.query("SELECT kwargs FROM trigger")
        deferred_rows.extend(_readable(str(row[0]), deployment.home) for row in kwargs)
        next_kwargs = deployment.query("SELECT next_kwargs FROM task_instance WHERE next_kwargs IS NOT NULL")
        deferred_rows.extend(str(row[0]) for row in next_kwargs)

    observed = watch_run(deployment, run_id, timeout=240, on_poll=snapshot)
    assert observed.final_state == "success", deployment.describe(run_id)
    key = deployment.api_key
    # What was scanned could show a leak: the trigger kwargs were read, request ids and all.
    assert any("request_id" in row and "segmind_conn_id" in row for row in deferred_rows)
    assert not [row for row in deferred_rows if key in row]

    files = [p for root in (deployment.home, deployment.output) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") and "trigger" in p.name for p in files)  # trigger logs were written
    assert [str(p) for p in files if key.encode() in p.read_bytes()] == []

    with contextlib.closing(
        sqlite3.connect(f"file:{deployment.home / 'airflow.db'}?mode=ro", uri=True)
    ) as db:
        dump = "\n".join(db.iterdump())
    for table in ("xcom", "rendered_task_instance_fields", "task_instance", "task_state_store", "log"):
        assert f'CREATE TABLE "{table}"' in dump or f"CREATE TABLE {table}" in dump, table
    assert "request_id" in dump  # XCom and task state hold the request ids the runs made
    assert key not in dump

    calls = deployment.emulator("GET", "/calls")
    media = [c for c in calls if c["endpoint"] == "media"]
    assert media and not any(c["key_present"] for c in media)  # the media host never saw the key
    assert all(c["key_present"] for c in calls if c["endpoint"] != "media")  # the API host always did
