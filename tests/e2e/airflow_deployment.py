"""A real Airflow deployment for the end-to-end tests, with the emulator standing in for Segmind.

In a temporary ``AIRFLOW_HOME``: api-server, scheduler, dag-processor and triggerer as separate
processes (LocalExecutor, SQLite), each in its own process group so any of them can be killed alone
and all of them are killed at the end, failures included. Task states are read from the
deployment's SQLite database, read-only, in short transactions; the human-in-the-loop approval is
answered through Airflow's REST API, as the UI does.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
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

from cryptography.fernet import Fernet
from processes import free_port, wait_until

from segmind_provider.testing.emulator.control import connection_dict

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "segmind_content_pipeline"
BLOCKED_WORD = "headlamp"  # the catalog's aurora-headlamp product is content-blocked by the emulator
BLOCKED_PRODUCT = "aurora-headlamp"
POOL_SLOTS = 6
#: ~2.2 s per scene and ~14.5 s for the clip: each Segmind task is surely deferred, and the run stays short.
FAST_SCALE = 0.1
#: The model pages' own times (a scene ~22 s): tasks are surely still deferred when the triggerer is killed.
SLOW_SCALE = 1.0
READY_PREFIX = "SEGMIND_EMULATOR_READY "
#: Every task that calls Segmind, and whether it is mapped per product.
SEGMIND_TASKS = {
    "product.cutout": True,
    "product.scene": True,
    "product.caption": True,
    "hero_upscale": False,
    "hero_clip": False,
}
REVIEW_TASK = "review"


def catalog() -> dict[str, Any]:
    return dict(json.loads((DAGS / "data" / "product_catalog.json").read_text()))


def catalog_ids() -> list[str]:
    return [str(p["id"]) for p in catalog()["products"]]


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
            connection_dict(self.emulator_url, self.api_key, FAST_SCALE)
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
                functools.partial(self.query, "SELECT 1 FROM dag WHERE dag_id = ? AND is_paused = 0", dag_id),
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

    def deferred_with_triggerer(self, run_id: str, task_id: str = "product.scene") -> dict[int, int | None]:
        """Tasks deferred right now, and the triggerer job holding each one's trigger."""
        rows = self.query(
            "SELECT ti.map_index, tr.triggerer_id FROM task_instance ti JOIN trigger tr ON ti.trigger_id = tr.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ? AND ti.state = 'deferred'",
            DAG_ID,
            run_id,
            task_id,
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

    def fired_by(self, run_id: str, task_id: str, map_index: int) -> set[int]:
        """Triggerer job ids whose trigger log for this task records a fired event.

        The triggerer writes each trigger's log next to the task's, as
        ``attempt=N.log.trigger.<triggerer job id>.log`` (in ``map_index=N/`` for a mapped task).
        """
        folder = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        jobs = set()
        for path in folder.glob("attempt=*.log.trigger.*.log"):
            text = path.read_text(errors="replace")
            # The trigger's own line (its module logger) reaches this task's trigger log too: the outcome,
            # "Segmind request <id>: [its last status change: ]<outcome> after <n> polls".
            if "Trigger fired event" in text and re.search(
                r"Segmind request \S+: .*\w+ after \d+ polls", text
            ):
                jobs.add(int(path.name.rsplit(".", 2)[-2]))
        return jobs

    def readable_trigger_kwargs(self, text: str) -> str:
        """Trigger kwargs as stored: plain JSON, or Fernet-encrypted with the deployment's key."""
        if text.startswith("{"):
            return text
        config = configparser.ConfigParser(interpolation=None)
        config.read(self.home / "airflow.cfg")
        return Fernet(config["core"]["fernet_key"].encode()).decrypt(text.encode()).decode()

    def try_numbers(self, run_id: str, task_id: str) -> dict[int, int]:
        rows = self.query(
            "SELECT map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            DAG_ID,
            run_id,
            task_id,
        )
        return {int(i): int(t) for i, t in rows}

    # ------------------------------------------------------------------ the REST API (what the UI calls)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call Airflow's REST API with a token (the simple auth manager gives one to anyone: all admins)."""
        with urllib.request.urlopen(f"{self.api_url}/auth/token", timeout=10) as response:
            token = json.loads(response.read())["access_token"]
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api_url}/api/v2{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def review_path(self, run_id: str) -> str:
        return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{REVIEW_TASK}/-1/hitlDetails"

    def awaiting_review(self, run_id: str) -> bool:
        """The approval step is waiting for a person (``awaiting_input`` on 3.3+, ``deferred`` before)."""
        return self.task_states(run_id, REVIEW_TASK).get(-1) in ("awaiting_input", "deferred")

    def review_settled(self, run_id: str) -> bool:
        """The approval step waits for a person, and the scheduler has seen the process that parked it end.

        An answer given before that (seconds after the step parked: a script, not a person) is lost to
        the parking process's late executor event, which fails the resumed step: the same Airflow
        race as apache/airflow#72716, for the ``awaiting_input`` state.
        """
        if not self.awaiting_review(run_id):
            return False
        marker = f"task_id={REVIEW_TASK}, run_id={run_id}, map_index=-1"
        log = self.logs["scheduler"].read_text(errors="replace").splitlines()
        return any(
            "TaskInstance Finished" in line and marker in line and "state=awaiting_input" in line
            for line in log
        )

    def answer_review(self, run_id: str, option: str = "Approve") -> dict[str, Any]:
        """Answer the approval step the way its Required Actions page does."""
        answer = self.rest(
            "PATCH", self.review_path(run_id), {"chosen_options": [option], "params_input": {}}
        )
        return dict(answer)

    def describe(self, run_id: str) -> str:
        """What to print when a scenario fails: states, and the tail of every component's log."""
        lines = [f"run {run_id}: {self.run_state(run_id)}"]
        for task_id in ("plan", *SEGMIND_TASKS, "hero", "candidates", REVIEW_TASK, "publish"):
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


@dataclass
class Observed:
    """What a watch over one run saw: every scene task seen deferred, and by which triggerer."""

    deferred: dict[int, set[int | None]] = field(default_factory=dict)
    final_state: str | None = None

    def add(self, snapshot: dict[int, int | None]) -> None:
        for index, triggerer in snapshot.items():
            self.deferred.setdefault(index, set()).add(triggerer)


def watch_run(
    deployment: Deployment,
    run_id: str,
    timeout: float,
    on_poll: Callable[[Observed], None] | None = None,
    until_review: bool = False,
    observed: Observed | None = None,
) -> Observed:
    """Poll a run until it ends (or, with ``until_review``, until its approval step waits for a person)."""
    observed = observed or Observed()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        observed.add(deployment.deferred_with_triggerer(run_id))
        if on_poll is not None:
            on_poll(observed)
        state = deployment.run_state(run_id)
        if state in ("success", "failed"):
            observed.final_state = state
            return observed
        if until_review and deployment.review_settled(run_id):
            return observed
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not get there in {timeout:.0f} s\n{deployment.describe(run_id)}")


@dataclass
class NightlyRun:
    """The shared whole-catalog run (``conftest.nightly_run``)."""

    run_id: str
    day: str
    products: list[str]
    first_seq: int  # the emulator's last call before the run: the run's calls are the ones after
    observed: Observed
