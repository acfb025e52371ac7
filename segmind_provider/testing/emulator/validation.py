"""Server-side parameter checks, so client bugs surface as the real service's 400s.

The emulator shares no code with the provider's own schemas on purpose: if both
sides drifted the same way, no test would notice.
"""

from __future__ import annotations

from typing import Any

# Named aspect ratios: 1:1 is exactly 1024x1024, the others are about one megapixel
# (1024*1024 pixels) with both sides rounded to a multiple of 16.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:3": (1184, 880),
    "3:4": (880, 1184),
    "5:4": (1152, 912),
    "4:5": (912, 1152),
}
OUTPUT_FORMATS = ("webp", "jpg", "png")
CONTENT_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}
MIN_SIDE, MAX_SIDE = 256, 1440


class ParamError(ValueError):
    """A parameter the service would reject; the message names the field."""


def round16(value: int) -> int:
    """Round to the nearest multiple of 16 (halves round up, like the service documents)."""
    return int(value / 16 + 0.5) * 16


def _int(params: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{name}: must be an integer")
    if not lo <= value <= hi:
        raise ParamError(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def _choice(params: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        raise ParamError(f"{name}: must be one of {', '.join(allowed)}")
    return value


def _size(params: dict[str, Any], aspect: str, lo: int, hi: int) -> tuple[int, int]:
    width = _int(params, "width", 1024, lo, hi)
    height = _int(params, "height", 1024, lo, hi)
    if aspect == "custom":
        assert width is not None and height is not None
        return round16(width), round16(height)
    return ASPECT_RATIOS[aspect]


def validate_flux_1_1_pro(params: dict[str, Any]) -> dict[str, Any]:
    """Check `flux-1.1-pro` parameters as documented on its model page; return them normalised."""
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParamError("prompt: required, must be a non-empty string")
    fields = _render_fields(params, prompt, MIN_SIDE, MAX_SIDE)
    image_prompt = params.get("image_prompt")
    if image_prompt is not None and (
        not isinstance(image_prompt, str) or not image_prompt.startswith(("http://", "https://", "data:"))
    ):
        raise ParamError("image_prompt: must be an http(s) or data URI")
    upsampling = params.get("prompt_upsampling", False)
    if not isinstance(upsampling, bool):
        raise ParamError("prompt_upsampling: must be a boolean")
    return {
        **fields,
        "safety_tolerance": _int(params, "safety_tolerance", 2, 1, 5),
        "prompt_upsampling": upsampling,
        "image_prompt": image_prompt,
    }


def validate_generic(params: dict[str, Any]) -> dict[str, Any]:
    """Lenient checks for registered models: only the fields the renderer uses."""
    prompt = params.get("prompt", "")
    if not isinstance(prompt, str):
        raise ParamError("prompt: must be a string")
    return _render_fields(params, prompt, 64, 2048)


def _render_fields(params: dict[str, Any], prompt: str, min_side: int, max_side: int) -> dict[str, Any]:
    """The fields every model's renderer uses, checked with the model's size limits."""
    aspect = _choice(params, "aspect_ratio", "1:1", ("custom", *ASPECT_RATIOS))
    width, height = _size(params, aspect, min_side, max_side)
    return {
        "prompt": prompt,
        "aspect_ratio": aspect,
        "width": width,
        "height": height,
        "output_format": _choice(params, "output_format", "webp", OUTPUT_FORMATS),
        "output_quality": _int(params, "output_quality", 80, 0, 100),
        "seed": _int(params, "seed", None, 0, 2**63 - 1),
    }
