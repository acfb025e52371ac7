"""How much work a payload asks for, relative to the model's defaults: the poll schedule's size hint.

A 256x256 image and a 1440x1440 one of the same model do not take the same time, and a process
that learned durations from one must not schedule the other with them (issue 13: a burst of 14 s
jobs after 30 quick ones polled 2.8 times more often than in a fresh process). The catalog entry
says which fields set the amount of output and what their defaults are; the ratio of what the
payload asks to those defaults is the workload (1.0 for a default request). Pure: reads only the
catalog's data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from segmind_provider.catalog import Parameter, get_model

__all__ = ["SIZE_CLASS_BASE", "size_class", "workload"]

#: Fields whose value scales the work linearly (a 10 s clip is twice a 5 s one).
LINEAR_FIELDS = ("duration", "num_inference_steps", "steps", "num_images", "num_outputs", "samples")
#: Fields that scale both sides of the output (an upscale factor): the work goes with its square.
SQUARED_FIELDS = ("scale_factor", "upscale_factor")
#: Beyond these a payload is treated as this far from the default: the estimate is a hint, not a promise.
WORKLOAD_RANGE = (1 / 64, 64.0)
#: Workloads within a factor of this of each other share their learned durations.
SIZE_CLASS_BASE = 2.0


def _ratio(param: Parameter | None, value: Any) -> float:
    """``value`` over the parameter's default, or 1.0 when either is missing or not a positive number."""
    default = param.default if param is not None else None
    if isinstance(value, bool) or isinstance(default, bool):
        return 1.0
    if not isinstance(value, (int, float)) or not isinstance(default, (int, float)):
        return 1.0
    if value <= 0 or default <= 0:
        return 1.0
    return float(value) / float(default)


def workload(model: str | None, payload: Mapping[str, Any] | None) -> float:
    """The work ``payload`` asks of ``model`` relative to a default request (pixels, length, steps).

    1.0 for a model the catalog does not know, a payload at the defaults, or fields without a
    documented default: nothing is guessed beyond what the entry says.
    """
    entry = get_model(model) if model else None
    if entry is None or not payload:
        return 1.0
    params = entry.parameters
    ratio = _ratio(params.get("width"), payload.get("width")) * _ratio(
        params.get("height"), payload.get("height")
    )
    for name in LINEAR_FIELDS:
        ratio *= _ratio(params.get(name), payload.get(name))
    for name in SQUARED_FIELDS:
        ratio *= _ratio(params.get(name), payload.get(name)) ** 2
    low, high = WORKLOAD_RANGE
    return min(max(ratio, low), high)


def size_class(workload_ratio: float) -> int:
    """The class a workload's durations are learned in: 0 for the default, -4 for 1/16 of it..."""
    if workload_ratio <= 0 or workload_ratio != workload_ratio:
        return 0
    return round(math.log(workload_ratio, SIZE_CLASS_BASE))
