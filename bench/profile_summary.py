"""Where a `dags test` of the batch spends its CPU: a py-spy profile (speedscope JSON) summed by part.

``bench/batch_scale.py --py-spy BIN`` records each run with ``py-spy record --gil`` (only the thread
holding the GIL is sampled: CPU spent in Python, not waits). This reads such a profile and prints
the seconds of samples in each part: the provider's code (any stack through ``segmind_provider``,
the libraries it calls included), Airflow building its in-process execution API, Airflow's
execution API answering the task, imports, the rest; then the provider's part by its innermost
frame of ours.

Usage: ``python bench/profile_summary.py bench/results/profiles/<run>.speedscope.json``
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

OURS = "segmind_provider/"


def _part(frames: list[tuple[str, str]]) -> str:
    """The part a stack (outermost first, ``(file, function)``) is counted in."""
    text = " ".join(f"{file}:{name}" for file, name in frames)
    if "_cadwyn_initialize" in text or "InProcessExecutionAPI.app" in text:
        return "Airflow: building the in-process execution API"
    if OURS in text:
        return "provider"
    if "execution_api" in text or "starlette" in text or "Handle._run" in text:
        return "Airflow: the execution API's requests"
    if "_find_and_load" in text:
        return "imports"
    return "other"


def _ours(frames: list[tuple[str, str]]) -> str:
    """The innermost frame of the provider's in a stack."""
    for file, name in reversed(frames):
        if OURS in file:
            return f"{file.split(OURS)[-1]}:{name}"
    return "?"


def summarize(profile: dict[str, Any]) -> tuple[float, Counter[str], Counter[str]]:
    """Seconds of samples in all, by part, and the provider's by its innermost frame."""
    shared = profile["shared"]["frames"]
    parts: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0.0
    for thread in profile["profiles"]:
        for stack, weight in zip(thread["samples"], thread["weights"], strict=True):
            frames = [(shared[i].get("file", ""), shared[i]["name"]) for i in stack]
            total += weight
            part = _part(frames)
            parts[part] += weight
            if part == "provider":
                ours[_ours(frames)] += weight
    return total, parts, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15, help="the provider's frames to list")
    args = parser.parse_args(argv)
    total, parts, ours = summarize(json.loads(args.profile.read_text()))
    print(f"{total:.1f} s of samples")
    for part, seconds in parts.most_common():
        print(f"{100 * seconds / total:5.1f} %  {seconds:6.2f} s  {part}")
    print("the provider's, by its innermost frame:")
    for frame, seconds in ours.most_common(args.top):
        print(f"{100 * seconds / total:5.1f} %  {seconds:6.2f} s  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
