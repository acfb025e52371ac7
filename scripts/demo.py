"""`make demo`: run the content pipeline DAG end to end and show where its gallery is.

Without ``SEGMIND_API_KEY`` it starts the embedded emulator (time-scaled, so images take about a
second) and points the ``segmind_default`` connection at it; with the key it talks to the real API
and nothing else changes. Airflow lives in ``.airflow-home/`` and the results in ``output/`` (both
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
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "segmind_content_pipeline"
POOL = "segmind"
POOL_SLOTS = 4
EMULATOR_KEY = "demo-key"  # any non-empty key works with the emulator
FLUX_SECONDS = 14.05  # the model page's typical time, which the emulator reproduces before scaling
READY_PREFIX = "SEGMIND_EMULATOR_READY "
BLOCKED_WORD = "headlamp"  # one catalog product mentions it: shows how a content block is reported


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
    """A line per product: when its original lands, when its formats are published, or when its
    generation task ends without an image (read from the ``dags test`` log)."""

    _END = re.compile(r"\[DAG TEST\] end task task_id=generate map_index=(\d+)")

    def __init__(
        self, raw_dir: Path, published_dir: Path | None, products: list[str], log_path: Path
    ) -> None:
        self.raw_dir, self.published_dir, self.products = raw_dir, published_dir, products
        self.total = len(products)
        self.log_path, self._log_offset = log_path, 0
        self.generated: set[str] = set()
        self.rendered: set[str] = set()
        self.failed: set[str] = set()
        self.started = time.monotonic()
        self.last_line = self.started
        self.wall_start = time.time() - 1  # files older than this are a previous run's

    def _fresh(self, path: Path) -> bool:
        try:
            return path.stat().st_mtime >= self.wall_start
        except FileNotFoundError:
            return False

    def poll(self) -> None:
        for path in sorted(self.raw_dir.glob("*.*")) if self.raw_dir.is_dir() else []:
            if path.stem in self.products and path.stem not in self.generated and self._fresh(path):
                self.generated.add(path.stem)
                self._line(f"generated {len(self.generated):2d}/{self.total}  {path.stem}")
        for index in self._ended_generations():
            product = self.products[index] if index < self.total else f"#{index}"
            if product not in self.generated and not any(map(self._fresh, self.raw_dir.glob(f"{product}.*"))):
                self.failed.add(product)
                self._line(f"no image     {product} (generation failed; the reason goes in the manifest)")
        if self.published_dir is not None and self.published_dir.is_dir():
            for thumb in sorted(self.published_dir.glob("*/thumbnail.jpg")):
                product = thumb.parent.name
                if product in self.products and product not in self.rendered and self._fresh(thumb):
                    self.rendered.add(product)
                    self._line(f"published {len(self.rendered):2d}/{self.total}  {product} (4 formats)")
        if time.monotonic() - self.last_line > 10:
            done = len(self.generated) + len(self.failed)
            self._line(f"… still working: {done}/{self.total} generations finished")

    def _ended_generations(self) -> list[int]:
        try:
            with open(self.log_path, errors="replace") as log:
                log.seek(self._log_offset)
                text = log.read()
        except FileNotFoundError:
            return []
        complete = text.rfind("\n") + 1  # only whole lines; the rest is read next time
        self._log_offset += len(text[:complete].encode("utf-8", errors="replace"))
        return [int(m.group(1)) for m in self._END.finditer(text[:complete])]

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        _say(f"  [{self.last_line - self.started:5.1f} s] {text}")


def _product_ids(selected: list[str]) -> list[str]:
    """Product ids in map-index order, as the DAG's plan task will order them."""
    catalog = json.loads((REPO / "dags" / "data" / "campaign_catalog.json").read_text())
    ids = [str(p["id"]) for p in catalog["products"]]
    return [i for i in ids if i in set(selected)] if selected else ids


def run_pipeline(
    procs: Processes, env: dict[str, str], airflow: str, home: Path, run_date: dt.date, products: list[str]
) -> int:
    """``airflow dags test`` in a child process, with progress read from the output folders."""
    output = Path(env["SEGMIND_OUTPUT_DIR"])
    published = _local(env["SEGMIND_PUBLISH_URI"])
    log_path = home / "demo-dags-test.log"
    progress = Progress(
        output / "raw" / run_date.isoformat(),
        published / run_date.isoformat() if published else None,
        _product_ids(products),
        log_path,
    )
    argv = [airflow, "dags", "test", DAG_ID, dt.datetime.now(dt.timezone.utc).isoformat()]
    if products:
        argv += ["--conf", json.dumps({"products": products})]
    with open(log_path, "w") as log:
        proc = procs.start(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            progress.poll()
            time.sleep(0.25)
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
    for product in manifest["products"]:
        if product["status"] != "published":
            _say(f"  ✗ {product['product_id']}: {product['error']}")
    gallery = published / "index.html"
    _say("")
    _say(f"Images:   {_rel(raw)}/  (originals)")
    _say(f"          {_rel(published)}/<product>/{{square,story,link_card,thumbnail}}.jpg")
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
        default=0.1,
        help="emulator speed-up (0.1: ~1.4 s per image instead of 14)",
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
            env["AIRFLOW_CONN_SEGMIND_DEFAULT"] = json.dumps(
                {"conn_type": "segmind", "host": base_url, "password": EMULATOR_KEY}
            )
            env["SEGMIND_EXPECTED_DURATION"] = f"{FLUX_SECONDS * args.time_scale:.3f}"
            _say(
                f"• SEGMIND_API_KEY not set: started the Segmind emulator at {base_url} (time scale {args.time_scale})"
            )
            if not args.no_block:
                _say(
                    f"  it blocks prompts containing {BLOCKED_WORD!r}, to show how a content block is reported"
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
