"""`make demo`: run the content pipeline DAG end to end and show where its gallery is.

The pipeline starts from the product photos in ``dags/data/products/``: background removed, product
composed into a scene, caption written, the hero upscaled and animated, then a human-in-the-loop
approval before publishing. The demo runs unattended, so it turns on the pipeline's demo mode
(``SEGMIND_AUTO_APPROVE=1``: the approval step approves itself, and the demo says so).

Without ``SEGMIND_API_KEY`` it starts the embedded emulator (time-scaled, so a scene takes about a
second) and points the ``segmind_default`` connection at it (API, storage and time scale); with the
key it talks to the real API and nothing else changes. Airflow lives in ``.airflow-home/`` and the results in ``output/`` (both
gitignored); a second run reuses the database and overwrites the day's gallery.

The run uses ``airflow dags test``: one process, no scheduler to wait for, every deferral resumed
in-process by the same trigger a triggerer would run (see docs/pipeline.md for why, and for the
real-deployment tests that exercise the triggerer itself).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from segmind_provider.testing.emulator.control import connection_dict

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "segmind_content_pipeline"
POOL = "segmind"
POOL_SLOTS = 4
EMULATOR_KEY = "demo-key"  # any non-empty key works with the emulator
READY_PREFIX = "SEGMIND_EMULATOR_READY "
BLOCKED_WORD = "headlamp"  # one catalog product mentions it: shows how a content block is reported
CATALOG = REPO / "dags" / "data" / "product_catalog.json"
#: What the progress lines call each task of the pipeline.
STEPS = {
    "product.cutout": "cutout",
    "product.scene": "scene",
    "product.caption": "caption",
    "hero_upscale": "upscale",
    "hero_clip": "clip",
    "review": "review",
    "publish": "publish",
}


class Processes:
    """Every child this script starts, each in its own session, so cleanup reaches grandchildren
    too and a Ctrl-C in the terminal reaches only us (we then stop them in order)."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[Any]] = []

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self._children.append(proc)
        return proc

    def stop_all(self, grace: float = 5.0) -> None:
        for proc in reversed(self._children):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self._children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # also reaps leftovers of a group whose leader exited
            proc.wait()
        self._children.clear()


def _signal_group(proc: subprocess.Popen[Any], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _say(text: str = "") -> None:
    print(text, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _airflow_env(home: Path, output: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "SEGMIND_OUTPUT_DIR": str(output),
            "SEGMIND_PUBLISH_URI": env.get("SEGMIND_PUBLISH_URI") or str(output / "published"),
            "SEGMIND_AUTO_APPROVE": "1",  # unattended: the review step approves itself (and logs it)
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _run_quiet(procs: Processes, argv: Sequence[str], env: dict[str, str], log: IO[str], what: str) -> None:
    proc = procs.start(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.wait() != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {_rel(Path(log.name))}")


def prepare_airflow(procs: Processes, home: Path, env: dict[str, str], airflow: str) -> None:
    """Migrate the metadata DB and create the pool, skipped when a previous run already did it."""
    version = importlib.metadata.version("apache-airflow")
    stamp = home / ".demo-ready"
    wanted = f"{version} {POOL}={POOL_SLOTS}"
    if (home / "airflow.db").exists() and stamp.exists() and stamp.read_text() == wanted:
        _say(f"• Airflow {version}: metadata DB in {_rel(home)} is ready")
        return
    home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(home / "demo-setup.log", "w") as log:
        _run_quiet(procs, [airflow, "db", "migrate"], env, log, "airflow db migrate")
        _run_quiet(
            procs,
            [airflow, "pools", "set", POOL, str(POOL_SLOTS), "Concurrent Segmind jobs", "--include-deferred"],
            env,
            log,
            "airflow pools set",
        )
    stamp.write_text(wanted)
    _say(
        f"• Airflow {version}: metadata DB migrated in {_rel(home)}, "
        f"pool '{POOL}' ({POOL_SLOTS} slots) ({time.monotonic() - started:.0f} s)"
    )


def start_emulator(procs: Processes, time_scale: float, block: bool, log_path: Path) -> str:
    """Start ``segmind-emulator`` on a free port; returns its base URL once it listens."""
    argv = [sys.executable, "-m", "segmind_provider.testing.emulator", "--port", "0"]
    argv += ["--time-scale", str(time_scale)]
    if block:
        argv += ["--block-word", BLOCKED_WORD]
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the emulator
    proc = procs.start(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(READY_PREFIX):
            return str(json.loads(line[len(READY_PREFIX) :])["base_url"])
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"the emulator did not start; see {_rel(log_path)}")


class Progress:
    """A line per pipeline step as it ends (cutout, scene, caption per product; upscale, clip, review,
    publish), read from the run's task states in the metadata DB (read-only)."""

    def __init__(self, db: Path, products: list[str], hero: str) -> None:
        self.db, self.products, self.hero = db, products, hero
        self.started = time.monotonic()
        self.last_line = self.started
        self.wall_start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        self.seen: set[tuple[str, int]] = set()

    def _rows(self) -> list[tuple[str, int, str]]:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2)) as db:
                run = db.execute(
                    "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
                ).fetchone()
                if run is None:
                    return []
                return list(
                    db.execute(
                        "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
                        "AND state IN ('success', 'failed', 'upstream_failed', 'skipped') AND end_date >= ?",
                        (DAG_ID, run[0], self.wall_start.strftime("%Y-%m-%d %H:%M:%S")),
                    )
                )
        except sqlite3.Error:  # not migrated yet, or busy: the next poll reads it
            return []

    def poll(self) -> None:
        for task_id, map_index, state in sorted(self._rows(), key=lambda r: (r[0] not in STEPS, r[1])):
            if task_id not in STEPS or (task_id, map_index) in self.seen:
                continue
            self.seen.add((task_id, map_index))
            self._line(f"{STEPS[task_id]:<8} {self._mark(state)} {self._what(task_id, map_index, state)}")
        if time.monotonic() - self.last_line > 15:
            self._line("… still working")

    @staticmethod
    def _mark(state: str) -> str:
        return {"success": "✓", "skipped": "-"}.get(state, "✗")

    def _what(self, task_id: str, map_index: int, state: str) -> str:
        if task_id == "review":
            return "approved automatically (demo mode)" if state == "success" else state
        if task_id == "publish":
            return "manifest, gallery and formats written" if state == "success" else state
        product = self.products[map_index] if 0 <= map_index < len(self.products) else self.hero
        return product + ("" if state == "success" else f" ({state.replace('_', ' ')})")

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        _say(f"  [{self.last_line - self.started:5.1f} s] {text}")


def _catalog(selected: list[str]) -> tuple[list[str], str]:
    """Product ids in map-index order, as the DAG's plan task will order them, and the hero."""
    catalog = json.loads(CATALOG.read_text())
    ids = [str(p["id"]) for p in catalog["products"]]
    return ([i for i in ids if i in set(selected)] if selected else ids), str(catalog["hero"])


def run_pipeline(
    procs: Processes, env: dict[str, str], airflow: str, home: Path, run_date: dt.date, products: list[str]
) -> int:
    """``airflow dags test`` in a child process, with a line per step as it ends."""
    log_path = home / "demo-dags-test.log"
    ids, hero = _catalog(products)
    progress = Progress(home / "airflow.db", ids, hero)
    argv = [airflow, "dags", "test", DAG_ID, dt.datetime.now(dt.timezone.utc).isoformat()]
    if products:
        argv += ["--conf", json.dumps({"products": products})]
    with open(log_path, "w") as log:
        proc = procs.start(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            progress.poll()
            time.sleep(0.5)
        progress.poll()
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0 or "state=success" not in text:
        _say(f"\nThe DAG run did not succeed (exit {proc.returncode}). Last lines of {_rel(log_path)}:")
        for line in text.splitlines()[-30:]:
            _say("  " + line)
        return 1
    _say(f"  DAG run succeeded in {time.monotonic() - progress.started:.0f} s (log: {_rel(log_path)})")
    return 0


def _local(uri: str) -> Path | None:
    """The local folder behind a publish URI, or None for object storage (s3://, gs://, ...)."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return None if "://" in uri else Path(uri)


def report(publish_uri: str, run_date: dt.date, raw: Path) -> int:
    local = _local(publish_uri)
    if local is None:
        _say(f"\nPublished to {publish_uri.rstrip('/')}/{run_date.isoformat()}/ (manifest.json, index.html)")
        return 0
    published = local / run_date.isoformat()
    manifest_path = published / "manifest.json"
    if not manifest_path.is_file():
        _say(f"No manifest at {_rel(manifest_path)}")
        return 1
    manifest = json.loads(manifest_path.read_text())
    counts = manifest["counts"]
    _say(f"\n{counts['published']} of {counts['total']} products published, {counts['failed']} failed.")
    _say(f"Approval: {manifest.get('approved_by') or 'a reviewer'}.")
    for product in manifest["products"]:
        if product["status"] != "published":
            _say(f"  ✗ {product['product_id']}: {product['error']}")
    gallery = published / "index.html"
    _say("")
    _say(f"Stages:   {_rel(raw)}/<product>/{{cutout,scene,hero-upscaled,clip}}.*  (what Segmind made)")
    _say(f"Published: {_rel(published)}/<product>/  (every stage, square, story, link card)")
    _say(f"Manifest: {_rel(manifest_path)}")
    _say(f"Gallery:  {_rel(gallery)}")
    _say(f"          open {gallery.resolve().as_uri()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", type=Path, default=REPO / "output", help="results folder (default output/)"
    )
    parser.add_argument("--airflow-home", type=Path, default=REPO / ".airflow-home")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="emulator speed-up (0.05: a scene takes ~1.1 s instead of 22, the clip ~7 s instead of 145)",
    )
    parser.add_argument(
        "--no-block",
        action="store_true",
        help=f"do not make the emulator block prompts with {BLOCKED_WORD!r}",
    )
    parser.add_argument(
        "--products", default="", help="comma-separated product ids (default: the whole catalog)"
    )
    args = parser.parse_args(argv)

    # Ctrl-C and SIGTERM both end in the same cleanup (also when started with SIGINT ignored, as `&` does).
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    home, output = args.airflow_home.resolve(), args.output.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = _airflow_env(home, output)
    airflow = str(Path(sys.executable).with_name("airflow"))
    products = [p.strip() for p in args.products.split(",") if p.strip()]
    run_date = dt.datetime.now(dt.timezone.utc).date()
    procs = Processes()
    started = time.monotonic()
    try:
        if os.environ.get("SEGMIND_API_KEY"):
            _say("• SEGMIND_API_KEY is set: using the real Segmind API (images are billed to your account)")
        else:
            base_url = start_emulator(procs, args.time_scale, not args.no_block, home / "emulator.log")
            # API, storage (input uploads) and time scale (the poll schedule shrinks with it).
            env["AIRFLOW_CONN_SEGMIND_DEFAULT"] = json.dumps(
                connection_dict(base_url, EMULATOR_KEY, args.time_scale)
            )
            _say(
                f"• SEGMIND_API_KEY not set: started the Segmind emulator at {base_url} (time scale {args.time_scale})"
            )
            if not args.no_block:
                _say(
                    f"  it blocks prompts containing {BLOCKED_WORD!r}, to show how a content block is reported"
                )
        _say(
            "• Demo mode: the review step approves tonight's set by itself (SEGMIND_AUTO_APPROVE=1);"
            " in a deployment a reviewer approves it in the Airflow UI (Required Actions)"
        )
        prepare_airflow(procs, home, env, airflow)
        _say(f"• Running DAG {DAG_ID} for {run_date} with `airflow dags test` …")
        status = run_pipeline(procs, env, airflow, home, run_date, products)
        if status == 0:
            status = report(env["SEGMIND_PUBLISH_URI"], run_date, output / "raw" / run_date.isoformat())
        _say(f"\nDone in {time.monotonic() - started:.0f} s.")
        return status
    except KeyboardInterrupt:
        _say("\nInterrupted: stopping everything this demo started …")
        return 130
    except RuntimeError as exc:
        _say(f"\nError: {exc}")
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
