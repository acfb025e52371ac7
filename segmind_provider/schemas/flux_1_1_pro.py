"""Payload schema for ``flux-1.1-pro`` (Segmind's model page is the source of every rule here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from segmind_provider.schemas._base import (
    Problem,
    SegmindPayload,
    TemplatedBool,
    TemplatedInt,
    int_from_template_text,
)

MODEL = "flux-1.1-pro"

AspectRatio = Literal["custom", "1:1", "16:9", "2:3", "3:2", "4:5", "5:4", "9:16", "3:4", "4:3"]
OutputFormat = Literal["webp", "jpg", "png"]

ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
DEFAULT_ASPECT_RATIO: AspectRatio = "1:1"
DEFAULT_SIDE = 1024
SIDE_MIN, SIDE_MAX, SIDE_STEP = 256, 1440, 16


def round_to_step(value: int) -> int:
    """Round to the nearest multiple of 16, halves upwards (1032 -> 1040).

    The service rounds the same way on its side; doing it here makes the payload we send (and
    the image size a later task can expect) exactly what the service will use. 256 and 1440 are
    multiples of 16, so a value inside the range stays inside it.
    """
    return (value + SIDE_STEP // 2) // SIDE_STEP * SIDE_STEP


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("the prompt is empty or only whitespace")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL")
    return value


Side = Annotated[
    TemplatedInt,
    Field(ge=SIDE_MIN, le=SIDE_MAX),
    AfterValidator(round_to_step),
]


class FluxPro11Payload(SegmindPayload):
    """The parameters of ``flux-1.1-pro``; see docs/schemas-and-outputs.md for the choices made."""

    output_format_field: ClassVar[str | None] = "output_format"
    default_output_format: ClassVar[str | None] = "webp"

    prompt: Annotated[str, AfterValidator(_not_blank), Field(description="a non-empty string")]
    aspect_ratio: Annotated[
        AspectRatio, Field(description="one of " + ", ".join(repr(a) for a in ASPECT_RATIOS))
    ] = DEFAULT_ASPECT_RATIO
    width: Annotated[
        Side,
        Field(
            description=f"an integer from {SIDE_MIN} to {SIDE_MAX}, rounded to the nearest multiple of "
            f"{SIDE_STEP}; only with aspect_ratio='custom' (otherwise leave it out or {DEFAULT_SIDE})"
        ),
    ] = DEFAULT_SIDE
    height: Annotated[
        Side,
        Field(
            description=f"an integer from {SIDE_MIN} to {SIDE_MAX}, rounded to the nearest multiple of "
            f"{SIDE_STEP}; only with aspect_ratio='custom' (otherwise leave it out or {DEFAULT_SIDE})"
        ),
    ] = DEFAULT_SIDE
    image_prompt: Annotated[
        Annotated[str, AfterValidator(_http_url)] | None,
        Field(description="an http:// or https:// URL of an image"),
    ] = None
    output_format: Annotated[OutputFormat, Field(description="one of 'webp', 'jpg', 'png'")] = "webp"
    output_quality: Annotated[
        TemplatedInt, Field(ge=0, le=100, description="an integer from 0 to 100 (ignored for png)")
    ] = 80
    prompt_upsampling: Annotated[TemplatedBool, Field(description="true or false")] = False
    safety_tolerance: Annotated[
        TemplatedInt, Field(ge=1, le=5, description="an integer from 1 (strict) to 5 (permissive)")
    ] = 2
    seed: Annotated[
        Annotated[TemplatedInt, Field(ge=0)] | None,
        Field(description="an integer >= 0, or null for a random seed"),
    ] = None

    @classmethod
    def cross_field_problems(cls, data: Mapping[str, Any]) -> list[Problem]:
        """width/height are ignored by the service unless aspect_ratio is "custom".

        Sending ``width=512`` with a named ratio would silently produce a 1024 px image, so any
        value other than the default is refused rather than dropped.
        """
        ratio = data.get("aspect_ratio", DEFAULT_ASPECT_RATIO)
        if not isinstance(ratio, str) or ratio not in ASPECT_RATIOS or ratio == "custom":
            return []
        problems = []
        for side in ("width", "height"):
            if side not in data:
                continue
            value = int_from_template_text(data[side])
            if isinstance(value, int) and not isinstance(value, bool) and value != DEFAULT_SIDE:
                problems.append(
                    Problem(
                        side,
                        data[side],
                        f"{side} only applies with aspect_ratio='custom'; with aspect_ratio={ratio!r} "
                        f"the service ignores it and the image would not be {value} px. "
                        f"Set aspect_ratio='custom' or leave {side} out",
                    )
                )
        return problems
