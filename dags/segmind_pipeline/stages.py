"""Gather what each stage made for one product, from the stage tasks' results, whatever happened.

The review and publish steps both need it: the files the Segmind operators stored (the photo
included), the caption text, and for each stage that made nothing, why. XCom and storage are
reached through the callables the DAG passes in, so this stays free of Airflow and easy to test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from segmind_pipeline.publishing import StageFile

#: Stage -> (task id, mapped per product?). The hero's stages are single tasks.
STAGE_TASKS: dict[str, tuple[str, bool]] = {
    "cutout": ("product.cutout", True),
    "scene": ("product.scene", True),
    "caption": ("product.caption", True),
    "upscaled": ("hero_upscale", False),
    "clip": ("hero_clip", False),
}
HERO_STAGES = ("upscaled", "clip")

ResultOf = Callable[[str, "int | None"], "Mapping[str, Any] | None"]
ReasonOf = Callable[[str, "int | None"], str]


@dataclass
class ProductOutputs:
    """One product's stage files (photo first), caption, Segmind output URLs and failures by stage."""

    stages: dict[str, StageFile] = field(default_factory=dict)
    caption: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def data(self, stage: str) -> bytes | None:
        found = self.stages.get(stage)
        return found.data if found is not None else None


def read_location(location: str) -> bytes:
    """Bytes at a local path or an ObjectStoragePath URI (``s3://``, ``file://``, ``memory://``...)."""
    if not urlsplit(location).scheme or len(urlsplit(location).scheme) == 1:
        return Path(location).read_bytes()
    from airflow.sdk import ObjectStoragePath

    return bytes(ObjectStoragePath(location).read_bytes())


def suffix_of(location: str) -> str:
    return Path(urlsplit(location).path).suffix.lower() or ".bin"


def collect(
    job: Mapping[str, Any],
    index: int,
    *,
    result_of: ResultOf,
    reason_of: ReasonOf,
    read: Callable[[str], bytes] = read_location,
) -> ProductOutputs:
    """Everything one product's stages made; a stage without a result is listed with its reason."""
    outputs = ProductOutputs()
    try:
        outputs.stages["photo"] = StageFile(read(job["photo"]), suffix_of(job["photo"]))
    except OSError as exc:
        outputs.errors["photo"] = f"cannot read {job['photo']}: {exc}"
    for stage, (task_id, mapped) in STAGE_TASKS.items():
        if stage in HERO_STAGES and not job.get("hero"):
            continue
        map_index = index if mapped else None
        result = result_of(task_id, map_index)
        if not result:
            outputs.errors[stage] = reason_of(task_id, map_index)
            continue
        output = result.get("output")
        if isinstance(output, str) and output.startswith(("http://", "https://")):
            outputs.urls[stage] = output
        if stage == "caption":
            outputs.caption = str(output).strip() if output else None
            continue
        location = (result.get("output_uris") or [None])[0]
        if location is None:
            outputs.errors[stage] = "the stage stored no file"
            continue
        outputs.stages[stage] = StageFile(read(location), suffix_of(location), result.get("request_id"))
    return outputs
