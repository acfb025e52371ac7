"""What knowing Segmind's whole directory costs a process: today's six-entry catalog vs this one.

Each trial is a fresh interpreter that first imports Airflow's SDK (paid by every Airflow process
anyway, and noisy), then times (CPU time of the process: on a shared machine, wall time mostly
measures the neighbours) and traces, with the clock and ``tracemalloc`` started only after that: the provider's import (``segmind_provider.operators.segmind`` and the trigger, what a DAG
file and a triggerer load), then the whole catalog loaded (every full entry; on this branch also
the 507-model directory; a nearest-slug lookup over all of it, which only a slug nobody knows
pays, is timed apart). Time and memory come from separate runs (``tracemalloc`` slows Python
down). "today" is the package as it was before the directory (``SIX_ENTRIES``: main's last commit with
the six-entry catalog; main itself has the directory now), exported by ``git archive`` into a temporary
folder; both run interleaved.

Run:  .venv/bin/python bench/catalog_import.py [--trials 15] [--base COMMIT]
Target: this branch's import + loaded catalog at most 50 ms and 5 MB above today's (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from _common import REPO_ROOT, RESULTS_DIR

#: main before issue 19's directory was merged (d470b45's first parent): the six-entry catalog.
SIX_ENTRIES = "02bb1a945015faa24fef3e7785887d1e10610856"

TRIAL = r"""
import json, sys, time, tracemalloc
import airflow.sdk  # every Airflow process pays this: outside the measurement
trace = sys.argv[1] == "trace"  # tracemalloc slows Python down: memory and time in separate runs
if trace:
    tracemalloc.start()
t0 = time.process_time()
import segmind_provider.operators.segmind, segmind_provider.triggers.segmind
from segmind_provider import catalog
t1 = time.process_time()
imported = tracemalloc.get_traced_memory()[0] if trace else 0
catalog.models()
if hasattr(catalog, "directory_models"):
    catalog.directory_models()
t2 = time.process_time()
loaded = tracemalloc.get_traced_memory()[0] if trace else 0
if hasattr(catalog, "nearest_slugs"):
    catalog.nearest_slugs("flux-1.1-por")  # only a slug nobody knows pays this
t3 = time.process_time()
print(json.dumps({
    "file": segmind_provider.__file__,
    "import_ms": (t1 - t0) * 1000,
    "load_ms": (t2 - t1) * 1000,
    "typo_lookup_ms": (t3 - t2) * 1000,
    "import_mb": imported / 2**20,
    "load_mb": (loaded - imported) / 2**20,
}))
"""


def export(base: str, into: Path) -> Path:
    """The ``base`` branch's package, as ``git archive`` gives it."""
    tar = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", base, "segmind_provider"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def trial(path: Path, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", TRIAL, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(path)},
        cwd=tempfile.gettempdir(),
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    if not data.pop("file").startswith(str(path)):
        raise RuntimeError(f"the trial imported the wrong package for {path}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument(
        "--base", default=SIX_ENTRIES, help="the commit that is 'today' (the six-entry catalog)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"today": export(args.base, Path(tmp)), "this branch": REPO_ROOT}
        timed: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
        traced: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
        for _ in range(args.trials):
            for name, path in versions.items():
                timed[name].append(trial(path, "time"))
                traced[name].append(trial(path, "trace"))
    medians = {
        name: {
            **{
                k: statistics.median(r[k] for r in timed[name])
                for k in ("import_ms", "load_ms", "typo_lookup_ms")
            },
            **{k: statistics.median(r[k] for r in traced[name]) for k in ("import_mb", "load_mb")},
        }
        for name in versions
    }
    for name in versions:
        medians[name]["fastest_total_ms"] = min(r["import_ms"] + r["load_ms"] for r in timed[name])
    for m in medians.values():
        m["total_ms"] = m["import_ms"] + m["load_ms"]
        m["total_mb"] = m["import_mb"] + m["load_mb"]
    print(
        f"{'':<12} {'import ms':>10} {'load ms':>8} {'total ms':>9} {'typo ms':>8} "
        f"{'import MB':>10} {'load MB':>8} {'total MB':>9}"
    )
    for name, m in medians.items():
        print(
            f"{name:<12} {m['import_ms']:>10.1f} {m['load_ms']:>8.1f} {m['total_ms']:>9.1f} "
            f"{m['typo_lookup_ms']:>8.1f} {m['import_mb']:>10.2f} {m['load_mb']:>8.2f} {m['total_mb']:>9.2f}"
        )
    extra_ms = medians["this branch"]["total_ms"] - medians["today"]["total_ms"]
    extra_mb = medians["this branch"]["total_mb"] - medians["today"]["total_mb"]
    verdict = "met" if extra_ms <= 50 and extra_mb <= 5 else "NOT met"
    print(
        f"this branch - today: {extra_ms:+.1f} ms, {extra_mb:+.2f} MB (target <= 50 ms, <= 5 MB): {verdict}"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "catalog_import.json"
    out.write_text(
        json.dumps(
            {
                "trials": args.trials,
                "base": args.base,
                "medians": medians,
                "extra_ms": extra_ms,
                "extra_mb": extra_mb,
            },
            indent=1,
        )
        + "\n"
    )
    fastest = medians["this branch"]["fastest_total_ms"] - medians["today"]["fastest_total_ms"]
    print(
        f"fastest trials: today {medians['today']['fastest_total_ms']:.1f} ms, "
        f"this branch {medians['this branch']['fastest_total_ms']:.1f} ms ({fastest:+.1f} ms)"
    )
    print(f"wrote {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
