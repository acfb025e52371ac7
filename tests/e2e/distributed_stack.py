"""A distributed Airflow on loopback, started and stopped by a test: the pieces of docs/scaling.md.

PostgreSQL (the metadata database), Redis (Celery's broker and result backend), the Segmind
emulator, and Airflow with ``CeleryExecutor``: an api-server, a scheduler, a dag-processor, two
Celery workers and two triggerers. Everything listens on 127.0.0.1 on free ports and lives under
one temporary root that ``stop()`` removes, failures included. Each service runs in its own process
group; a task process puts itself in a group of its own (Airflow's supervisor does), so killing a
component kills its whole tree, task processes included, as losing the machine would.

PostgreSQL refuses to run as root: its folder belongs to the ``postgres`` user, and ``initdb`` and
``pg_ctl`` run through ``runuser -u postgres --`` when the test runs as root.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg2
from processes import free_port, kill_tree, wait_until

from segmind_provider.testing.emulator.runner import SegmindEmulator

REPO = Path(__file__).resolve().parents[2]
E2E_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DB_NAME = "airflow"
DB_USER = "airflow"
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: The Celery queue only the holding worker consumes, besides Airflow's ``default`` (tests/e2e/dags).
HOLDING_QUEUE = "holding"

JWT = "AIRFLOW__API_AUTH__JWT_SECRET"
FERNET = "AIRFLOW__CORE__FERNET_KEY"
METADATA_DB = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decoys(*settings: str) -> dict[str, str]:
    """Values for settings a component must not need: its own JWT secret and Fernet key, no database.

    A component that used one of them would fail (tokens it signed refused, connections it decrypted
    garbled, its database unreachable), so a passing run shows what each component really needs.
    """
    decoys = {
        JWT: secrets.token_urlsafe(64),
        FERNET: _fernet_key(),
        METADATA_DB: "postgresql+psycopg2://nobody@127.0.0.1:9/no-metadata-database-for-this-component",
    }
    return {setting: decoys[setting] for setting in settings}


def missing_services() -> list[str]:
    """The Debian packages this stack needs and this machine lacks (scripts/ensure-debian-packages)."""
    missing = [] if glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") else ["postgresql"]
    return missing + ([] if shutil.which("redis-server") else ["redis-server"])


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries Debian installed (``/usr/lib/postgresql/<v>/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent


class _Command:
    """An ``airflow`` CLI command running in the background."""

    def __init__(self, args: Sequence[str], proc: subprocess.Popen[str]) -> None:
        self.args, self.proc = args, proc

    def finish(self, timeout: float = 180) -> str:
        output, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError(f"airflow {' '.join(self.args[:2])} failed:\n{output[-3000:]}")
        return output


class Postgres:
    """A throw-away PostgreSQL cluster on a free port, owned by the ``postgres`` user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.bin = postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed: {result.stdout}{result.stderr}")

    def create(self) -> None:
        self.root.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        with contextlib.closing(self.connect("postgres")) as db:
            db.autocommit = True
            db.cursor().execute(f"CREATE DATABASE {DB_NAME}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """Stop whatever is left of the cluster, politely if it answers, else with SIGKILL."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        if pid_file.exists():
            kill_tree(int(pid_file.read_text().split()[0]))

    def connect(self, dbname: str = DB_NAME) -> Any:
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=DB_USER, dbname=dbname, connect_timeout=3
        )


class Stack:
    """The deployment: services, Airflow components, their logs, and read access to the metadata DB."""

    def __init__(
        self,
        emulator_options: dict[str, Any],
        extra_env: dict[str, str] | None = None,
        worker_env: dict[str, dict[str, str]] | None = None,
        holding_worker: str | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="segmind-distributed-"))
        self.root.chmod(0o755)  # the postgres user must reach its folder below
        self.home = self.root / "airflow-home"
        self.output = self.root / "output"
        self.hold_dir = self.root / "hold"
        self.postgres = Postgres(self.root / "postgres")
        self.redis_port = free_port()
        self.api_port = free_port()
        self.api_key = "sg-e2e-" + secrets.token_hex(12)
        self.emulator = SegmindEmulator(process=True, api_key=self.api_key, **emulator_options)
        self.extra_env = dict(extra_env or {})
        #: Settings of one worker only (e.g. its concurrency), by worker name.
        self.worker_env = {name: dict(env) for name, env in (worker_env or {}).items()}
        self.holding_worker = holding_worker
        if holding_worker is not None:  # the DAGs' test seam, on this worker only (tests/e2e/dags)
            self.worker_env.setdefault(holding_worker, {})["SEGMIND_E2E_HOLD_DIR"] = str(self.hold_dir)
        #: CPU seconds of the components killed on purpose, read just before the kill.
        self.cpu_at_kill: dict[str, float] = {}
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.retired: list[subprocess.Popen[Any]] = []  # components that exited and were started again
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.killed: set[str] = set()
        self.restarts: Counter[str] = Counter()
        self.logs: dict[str, Path] = {}
        self.env: dict[str, str] = {}
        self._db: Any = None
        #: Triggerer process name -> its job id; a restarted triggerer gets the next new job.
        self.triggerer_job: dict[str, int] = {}
        self._seen_triggerer_jobs: set[int] = set()
        self.started_in: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        began = time.monotonic()
        for folder in (self.home, self.output, self.hold_dir):
            folder.mkdir()
        self.postgres.create()
        self._spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
        )  # fmt: skip
        self.emulator.start()
        self.env = self._environment()
        self.airflow("db", "migrate", timeout=300)
        pool = self._cli("pools", "set", "segmind", "64", "Segmind jobs", "--include-deferred")
        # The emulator's connection (its URLs, this key, its time scale) lives in the environment of the
        # components that run the provider's code. Looked up in the metadata database instead, a
        # triggerer's first lookup builds Airflow's in-process execution API in the loop that
        # heartbeats, which held its heartbeat back 23-37 s here (docs/scaling.md).
        segmind = {"AIRFLOW_CONN_SEGMIND_DEFAULT": self.emulator.connection_json(self.api_key)}
        # Only the api-server (checks tokens) and the scheduler (signs them) hold the JWT secret; the
        # workers reach neither the metadata database nor the Fernet key: each gets a decoy instead.
        # The triggerers start one after the other: the order of their job ids maps jobs to processes.
        triggerer = {**segmind, **_decoys(JWT)}
        self._spawn(TRIGGERERS[0], [AIRFLOW, "triggerer"], {**triggerer, **self._log_port("TRIGGER")})
        self._spawn("api-server", [AIRFLOW, "api-server", "--port", str(self.api_port)])
        self._spawn("scheduler", [AIRFLOW, "scheduler"])
        self._spawn("dag-processor", [AIRFLOW, "dag-processor"], _decoys(JWT))
        for name in WORKERS:
            argv = [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h"]
            if name == self.holding_worker:
                argv += ["--queues", f"default,{HOLDING_QUEUE}"]
            own = {**self._log_port("WORKER"), **self.worker_env.get(name, {})}
            self._spawn(name, argv, {**segmind, **_decoys(JWT, FERNET, METADATA_DB), **own})
        wait_until(lambda: self.refresh_triggerer_jobs() == 1, 180, f"{TRIGGERERS[0]}'s job")
        self._spawn(TRIGGERERS[1], [AIRFLOW, "triggerer"], {**triggerer, **self._log_port("TRIGGER")})
        wait_until(lambda: self.refresh_triggerer_jobs() == 2, 180, f"{TRIGGERERS[1]}'s job")
        pool.finish()
        wait_until(self._api_healthy, 180, "the api-server's health check", interval=0.5)
        for name in WORKERS:
            wait_until(lambda n=name: " ready." in self.log_text(n), 180, f"Celery {name} to be ready")
        self.started_in = time.monotonic() - began

    def wait_for_dag(self, dag_id: str) -> None:
        wait_until(
            lambda: self.query("SELECT 1 FROM dag WHERE dag_id = %s AND NOT is_paused", dag_id),
            180,
            f"the dag-processor to register {dag_id}",
            interval=0.5,
        )

    def stop(self) -> list[str]:
        """Kill every process this stack started and remove its root; return what had to be hunted down."""
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_tree(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for proc in self.retired:
            proc.wait(timeout=10)
        self.emulator.stop()
        self.postgres.kill()
        leftovers = self._leftovers()
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        keep = os.environ.get("SEGMIND_E2E_KEEP_LOGS")
        if keep:  # for a person debugging a failure: the logs outlive the stack
            for folder in (self.root / "logs", self.home / "logs"):
                if folder.exists():
                    shutil.copytree(folder, Path(keep) / folder.parent.name / folder.name, dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)
        return [f"{p.pid} {' '.join(p.info['cmdline'] or [])}" for p in leftovers]

    def _leftovers(self) -> list[psutil.Process]:
        """Processes still alive that belong to this stack: by their command line or AIRFLOW_HOME."""
        mine = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                argv = " ".join(proc.info["cmdline"] or [])
                env = proc.environ() if str(self.root) not in argv else {}
            except psutil.Error:
                continue
            if str(self.root) in argv or env.get("AIRFLOW_HOME") == str(self.home):
                mine.append(proc)
        return mine

    # ------------------------------------------------------------------ processes

    @staticmethod
    def _log_port(component: str) -> dict[str, str]:
        """Each worker and triggerer serves its logs on its own port (they would collide on one host)."""
        return {f"AIRFLOW__LOGGING__{component}_LOG_SERVER_PORT": str(free_port())}

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Start a component in its own process group, its output appended to ``logs/<name>.log``."""
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        self.logs[name] = log_path
        self.commands[name] = (list(argv), {**self.env, **(env or {})} if self.env else dict(os.environ))
        with open(log_path, "a") as log:
            self.procs[name] = subprocess.Popen(
                list(argv),
                env=self.commands[name][1],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )

    def restart_exited(self) -> list[str]:
        """Start again every component that exited by itself, as a process supervisor would."""
        restarted = []
        for name, proc in list(self.procs.items()):
            if name not in self.killed and proc.poll() is not None:
                kill_tree(proc.pid)  # what it left behind (a log server, a runner subprocess)
                self.retired.append(proc)
                self._spawn(name, *self.commands[name])
                self.restarts[name] += 1
                self.triggerer_job.pop(name, None)  # a new triggerer job: refresh_triggerer_jobs() finds it
                restarted.append(name)
        return restarted

    def revive(self, *names: str) -> list[str]:
        """Start again components killed on purpose (all of them by default), as their supervisor would."""
        revived = sorted(set(names) & self.killed if names else self.killed)
        for name in revived:
            self.killed.discard(name)
            self.triggerer_job.pop(name, None)
            self._spawn(name, *self.commands[name])
        return revived

    def _cli(self, *args: str) -> _Command:
        """Start an ``airflow`` CLI command in the background."""
        argv = [AIRFLOW, *args]
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        return _Command(args, subprocess.Popen(argv, env=self.env, cwd=self.root, **output))

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
        """Start a DAG run through the REST API (a token from the simple auth manager, all admins)."""
        token = self._http("GET", "/auth/token")["access_token"]
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        self._http("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, token)

    def _http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command to completion; its output in the error when it fails."""
        result = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise AssertionError(
                f"airflow {args[0]} {args[1]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything below it (a lost machine, not a shutdown)."""
        self.killed.add(name)
        self.cpu_at_kill[name] = self._cpu_of(self.procs[name].pid) or 0.0
        kill_tree(self.procs[name].pid)
        self.procs[name].wait(timeout=30)

    def tree(self, name: str) -> list[psutil.Process]:
        """A live component's descendants."""
        try:
            return list(psutil.Process(self.procs[name].pid).children(recursive=True))
        except psutil.Error:
            return []

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time each service has used, its descendants (task processes, backends) included."""
        pids = {name: proc.pid for name, proc in self.procs.items() if name not in self.killed}
        pids["postgres"] = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        if self.emulator.pid is not None:
            pids["emulator"] = self.emulator.pid
        used = dict(self.cpu_at_kill)
        for name, pid in pids.items():
            seconds = self._cpu_of(pid)
            if seconds is not None:
                used[name] = seconds
        return used

    @staticmethod
    def _cpu_of(pid: int) -> float | None:
        """User + system CPU of a process and its descendants, live and reaped (None once it is gone)."""
        try:
            root = psutil.Process(pid)
            times = [p.cpu_times() for p in (root, *root.children(recursive=True))]
        except psutil.Error:
            return None
        return round(sum(t.user + t.system + t.children_user + t.children_system for t in times), 1)

    def workloads(self, dag_id: str, run_id: str) -> list[tuple[str, float]]:
        """(final state, seconds) of every try of the run's tasks the workers finished, from their
        supervisors' logs (a try's workload id is its task instance id, one per try)."""
        tries = self.query(
            "SELECT id::text FROM task_instance WHERE dag_id = %s AND run_id = %s UNION "
            "SELECT task_instance_id::text FROM task_instance_history WHERE dag_id = %s AND run_id = %s",
            dag_id,
            run_id,
            dag_id,
            run_id,
        )
        ours = {row[0] for row in tries}
        found = []
        for name in WORKERS:
            for line in self.log_text(name).splitlines():
                if "Workload finished" not in line:
                    continue
                plain = re.sub(r"\x1b\[[0-9;]*m", "", line)  # in case the log is coloured
                fields = dict(re.findall(r"(\w+)=['\"]?([^\s'\"]+)", plain))  # key=value, in any order
                if fields.get("workload_id") in ours:
                    found.append((fields["final_state"], float(fields["duration"])))
        return found

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if self.logs[name].exists() else ""

    def _environment(self) -> dict[str, str]:
        """What every component shares; docs/scaling.md lists it for a real deployment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SEGMIND_"))}
        pythonpath = [str(REPO / "dags"), env.get("PYTHONPATH", "")]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__DAGS_FOLDER": str(E2E_DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                FERNET: _fernet_key(),
                METADATA_DB: self.postgres.url,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                # Celery's task states in Redis, not in the metadata database (Airflow's default): a
                # worker that cannot record a task as started drops it, and with the database down
                # for seconds that left tasks queued until [scheduler] task_queued_timeout (600 s).
                "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
                # The workers reach the api-server's execution API here, with tokens signed by this secret.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
                JWT: secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parse once; nothing changes
                "SEGMIND_E2E_OUTPUT": str(self.output),
                **self.extra_env,
            }
        )
        return env

    def _api_healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # ------------------------------------------------------------------ metadata database

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the metadata database (autocommit, so every read sees the latest commits).

        Raises ``psycopg2.OperationalError`` while PostgreSQL is down; the next call reconnects.
        """
        try:
            if self._db is None or self._db.closed:
                self._db = self.postgres.connect()
                self._db.autocommit = True
            with self._db.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        except psycopg2.OperationalError:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
            raise

    def refresh_triggerer_jobs(self) -> int:
        """Map new triggerer jobs to the started triggerers still without one, oldest job first.

        Reliable only until the first restart: the ``job`` table does not say which process runs a
        job, and a triggerer that lived through a database outage can register a new job of its own,
        which this would then give to a restarted one. The test kills before any restart.
        """
        rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' ORDER BY id")
        new = [int(r[0]) for r in rows if int(r[0]) not in self._seen_triggerer_jobs]
        waiting = [name for name in self.procs if name in TRIGGERERS and name not in self.triggerer_job]
        for name, job in zip(waiting, new, strict=False):  # jobs not yet created stay unmapped
            self.triggerer_job[name] = job
            self._seen_triggerer_jobs.add(job)
        return len(self.triggerer_job)

    def live_triggerers(self) -> set[int]:
        """Triggerer jobs with a heartbeat in the last 10 s (by the database's clock)."""
        rows = self.query(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
            "AND latest_heartbeat > now() - interval '10 seconds'"
        )
        return {int(r[0]) for r in rows}

    def describe(self) -> str:
        """The tail of every component's log, for a failure message."""
        parts = []
        for name in self.logs:
            tail = "\n".join(self.log_text(name).splitlines()[-15:])
            parts.append(f"--- {name} ---\n{tail}")
        return "\n".join(parts)
