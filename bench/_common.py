"""Shared measurement helpers for the benches: emulator process, loop watchdog, resource sampler, tables, plot.

Kept free of any client code so the benches measure the provider, not themselves: the emulator runs
in its own process and is read only through its control endpoints (``/_emulator/...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
IMG_DIR = REPO_ROOT / "docs" / "img"
MODEL = "flux-1.1-pro"
PROMPT = "a lighthouse on a cliff at dusk, volumetric light, 35mm photograph"


# --------------------------------------------------------------------------- local servers


def free_port() -> int:
    """A TCP port free on loopback right now, for a bench server started in another process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on ``port`` (a bench server has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"bench server on port {port} did not start")


BENCH_KEY = "sk-bench-0123456789abcdef"
"""The API key the local bench servers are called with (and the ``segmind_bench`` connection holds)."""


@contextlib.contextmanager
def bench_server(script: str) -> Iterator[str]:
    """Run ``script --serve PORT`` in its own process (no shared GIL) and yield its base URL.

    Also points the ``segmind_bench`` connection at it, so a ``SegmindHook("segmind_bench")`` is
    measured against the same server as the bare client beside it.
    """
    port = free_port()
    server = subprocess.Popen([sys.executable, script, "--serve", str(port)])
    try:
        wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        os.environ["AIRFLOW_CONN_SEGMIND_BENCH"] = json.dumps(
            {"conn_type": "segmind", "password": BENCH_KEY, "host": base}
        )
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


# --------------------------------------------------------------------------- emulator


def start_emulator(**options: Any) -> Any:
    """The emulator in its own process (its CPU never counts as the client's), started and returned.

    ``options`` are ``SegmindEmulator``'s (time_scale, workers, rate_limit, rate_limit_window, ...).
    The call log is sized so every API call of a run is kept: the request counts come from it.
    """
    from segmind_provider.testing.emulator import SegmindEmulator

    options.setdefault("call_log_size", 1_000_000)
    emulator = SegmindEmulator(process=True, **options)
    emulator.start()
    return emulator


@dataclass
class CallCounts:
    """What the emulator saw, by endpoint; ``throttled`` counts the 429s it sent."""

    submit: int = 0
    status: int = 0
    result: int = 0
    history: int = 0
    throttled: int = 0
    other: int = 0

    @property
    def api_requests(self) -> int:
        """Requests that reached the API (429s included: they count against a real key's minute too);
        the account's history pages count too (a batch reads one per 100 results)."""
        return self.submit + self.status + self.result + self.history

    @classmethod
    def from_calls(cls, calls: Iterable[Mapping[str, Any]]) -> CallCounts:
        counts = cls()
        for call in calls:
            endpoint = call.get("endpoint")
            if call.get("status") == 429:
                counts.throttled += 1
            if endpoint == "submit":
                counts.submit += 1
            elif endpoint == "status":
                counts.status += 1
            elif endpoint == "result":
                counts.result += 1
            elif endpoint == "history":
                counts.history += 1
            else:
                counts.other += 1
        return counts


def model_latency(emulator: Any, model: str = MODEL) -> tuple[float, float]:
    """The emulator's mean latency and jitter for ``model`` (simulated seconds)."""
    spec = emulator.config()["models"][model]
    return float(spec["latency"]), float(spec["jitter"])


def oracle_duration(request_id: str, latency: float, jitter: float) -> float:
    """The simulated seconds the emulator drew for this request, recomputed from its id.

    Only the floor uses it, to poll exactly once at the known completion time. It mirrors the
    emulator's draw (``random.Random(request_id)``); if that ever changes the floor's requests per job
    rise above 3 and the smoke test says so.
    """
    return round(latency * (1 + random.Random(request_id).uniform(-jitter, jitter)), 2)


# --------------------------------------------------------------------------- measurement


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (a table should show the gap, not a zero)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux); 0 elsewhere."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    parts = stat.read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads included."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


class LoopWatchdog:
    """Measures the event loop's worst stall: a coroutine that asks to wake every ``interval`` seconds
    and records how late it woke (the same thing Airflow's triggerer watchdog reports)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_stall = 0.0
        self.stalls: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.max_stall

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            late = max(0.0, loop.time() - before - self.interval)
            self.stalls.append(late)
            self.max_stall = max(self.max_stall, late)


class GcPauses:
    """Times every garbage-collector pass: a full (generation 2) pass over a big heap stops the loop."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_full = 0.0
        self.full_passes = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.longest = max(self.longest, took)
        if info.get("generation") == 2:
            self.full_passes += 1
            self.longest_full = max(self.longest_full, took)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


@dataclass
class ProcessSampler:
    """Samples this process's RSS and TCP sockets from a side thread (the event loop is never touched).

    Sockets are counted as the process's socket file descriptors (cheap; the bench clients hold no
    socket but their TCP connections to the emulator). The thread's own CPU is kept in ``cpu_used`` so
    callers can take it out of the process's CPU.
    """

    interval: float = 0.1
    baseline_rss: int = 0
    peak_rss: int = 0
    peak_sockets: int = 0
    cpu_used: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.baseline_rss = psutil.Process().memory_info().rss
        self.peak_rss = self.baseline_rss
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)
        self.peak_sockets = max(self.peak_sockets, count_sockets())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            before = time.thread_time()
            self._sample()
            self.cpu_used += time.thread_time() - before


def count_sockets() -> int:
    """Open sockets of this process, from /proc/self/fd (psutil's per-process TCP table reads all of
    /proc/net/tcp, which costs more than what it measures)."""
    count = 0
    try:
        with os.scandir("/proc/self/fd") as entries:
            for entry in entries:
                try:
                    if os.readlink(entry.path).startswith("socket:"):
                        count += 1
                except OSError:
                    continue
    except OSError:
        return len(psutil.Process().net_connections(kind="tcp"))
    return count


def machine() -> dict[str, Any]:
    """What the numbers were measured on, for the docs."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --------------------------------------------------------------------------- output


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured table: what the bench prints is what the docs paste."""
    body = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
    return "\n".join(lines)


def report(
    bench: str,
    argv: Sequence[str] | None,
    info: Mapping[str, Any],
    rows: list[dict[str, Any]],
    table_text: str,
    checks: list[dict[str, Any]],
) -> dict[str, Any]:
    """Print each target's verdict and build the results file's content (command, machine, rows)."""
    for check in checks:
        verdict = "MET" if check["met"] else "NOT MET" if check["met"] is False else "n/a"
        print(f"[{verdict}] {check['target']}: {check['measured']}")
    return {
        "bench": bench,
        "command": f"python bench/{bench}.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": dict(info),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "targets": checks,
        "table": table_text,
    }


def add_run_args(parser: Any, name: str, cases: Sequence[str] = ()) -> None:
    """The arguments every bench shares: where its results go and, with ``cases``, the hidden ones by
    which it runs itself as one case's client process."""
    parser.add_argument("--name", default=name, help="results file bench/results/<name>.json")
    parser.add_argument("--results-dir", type=Path, default=None)
    if cases:
        parser.add_argument("--client", choices=cases, help=argparse.SUPPRESS)
        parser.add_argument("--url", help=argparse.SUPPRESS)
        parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)


def write_json(name: str, data: Mapping[str, Any], directory: Path | None = None) -> Path:
    out_dir = directory or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- plot (Pillow, no matplotlib)

_COLOURS = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
]


@dataclass
class PlotPoint:
    """One approach: requests per job against detection latency (marker at p50, whisker to p99)."""

    label: str
    requests_per_job: float
    p50: float
    p99: float
    group: str = ""


def plot_requests_vs_latency(points: Sequence[PlotPoint], path: Path, title: str) -> Path:
    """Scatter of requests/job (y, linear) against detection latency (x, log seconds) as a PNG.

    Pillow only, so the bench adds no plotting dependency.
    """
    from PIL import Image, ImageDraw, ImageFont

    width, height = 1000, 620
    left, right, top, bottom = 90, 300, 60, 70
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    big = ImageFont.load_default(size=18)

    pts = [p for p in points if not math.isnan(p.p50) and not math.isnan(p.requests_per_job)]
    lat = [max(v, 1e-3) for p in pts for v in (p.p50, p.p99) if not math.isnan(v)] or [0.01, 10.0]
    x_lo = 10 ** math.floor(math.log10(min(lat)))
    x_hi = 10 ** math.ceil(math.log10(max(lat) * 1.01))
    if x_hi <= x_lo:
        x_hi = x_lo * 10
    y_hi = max([p.requests_per_job for p in pts] + [4.0]) * 1.15
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        v = min(max(v, x_lo), x_hi)
        return left + (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - v / y_hi * plot_h

    draw.text((left, 8), title, fill="black", font=big)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    decade = x_lo
    while decade <= x_hi * 1.0001:
        x = sx(decade)
        draw.line([x, top, x, top + plot_h], fill=(225, 225, 225))
        label = f"{decade:g} s"
        draw.text(
            (x - draw.textlength(label, font=small) / 2, top + plot_h + 6), label, fill="black", font=small
        )
        decade *= 10
    step = _nice_step(y_hi)
    y = 0.0
    while y <= y_hi:
        yy = sy(y)
        draw.line([left, yy, left + plot_w, yy], fill=(225, 225, 225))
        label = f"{y:g}"
        draw.text((left - 8 - draw.textlength(label, font=small), yy - 7), label, fill="black", font=small)
        y += step
    floor_y = sy(3.0)
    draw.line([left, floor_y, left + plot_w, floor_y], fill=(150, 150, 150), width=1)
    draw.text((left + 4, floor_y - 17), "3 requests/job (the floor)", fill=(110, 110, 110), font=small)
    xlabel = "detection latency (s, log scale): marker = p50, whisker to p99"
    draw.text(
        (left + plot_w / 2 - draw.textlength(xlabel, font=font) / 2, height - 32),
        xlabel,
        fill="black",
        font=font,
    )
    draw.text((12, top - 24), "requests per job", fill="black", font=font)

    groups = sorted({p.group for p in pts})
    markers = ["circle", "square", "diamond", "triangle"]
    legend_y = top
    for i, p in enumerate(pts):
        colour = _COLOURS[i % len(_COLOURS)]
        x50, x99, yy = sx(max(p.p50, 1e-3)), sx(max(p.p99, 1e-3)), sy(p.requests_per_job)
        draw.line([x50, yy, x99, yy], fill=colour, width=3)
        draw.line([x99, yy - 6, x99, yy + 6], fill=colour, width=3)
        _marker(draw, x50, yy, markers[groups.index(p.group) % len(markers)] if groups else "circle", colour)
        _marker(draw, left + plot_w + 20, legend_y + 9, markers[groups.index(p.group) % len(markers)], colour)
        text = f"{p.label}: {p.requests_per_job:.1f} req/job, p50 {_secs(p.p50)}, p99 {_secs(p.p99)}"
        for j, chunk in enumerate(_wrap(text, 34)):
            draw.text((left + plot_w + 34, legend_y + j * 16), chunk, fill="black", font=small)
        legend_y += 16 * len(_wrap(text, 34)) + 10
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path


def _secs(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _nice_step(span: float) -> float:
    raw = span / 6
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines


def _marker(draw: Any, x: float, y: float, shape: str, colour: tuple[int, int, int]) -> None:
    r = 7
    if shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour, outline="black")
    elif shape == "diamond":
        draw.polygon(
            [(x, y - r - 2), (x + r + 2, y), (x, y + r + 2), (x - r - 2, y)], fill=colour, outline="black"
        )
    elif shape == "triangle":
        draw.polygon([(x, y - r - 2), (x + r + 1, y + r), (x - r - 1, y + r)], fill=colour, outline="black")
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline="black")
