"""What an output is made of, as a hashable value, and the pure function that makes it.

A job's output is a `Recipe`: the model, its task, the normalised parameters, the seed, the
output format and the inputs (bytes, or the recipe of an earlier job's output that was passed
in by URL). Equal recipes give byte-identical outputs, so they key the render cache, and a
chain of jobs can be re-rendered after the earlier jobs have expired.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from PIL import Image

from . import transforms
from .models import ModelSpec
from .render import draw_image, encode, open_image, render_glb, render_wav
from .validation import ASPECT_RATIOS, round16
from .video import image_to_video

Source = Union[bytes, "Recipe"]
UPSCALE_FIELDS = ("scale", "upscale_factor", "scale_factor", "factor", "upscale")
DURATION_FIELDS = ("duration", "seconds", "video_length")
PROMPT_FIELDS = ("prompt", "text", "instruction", "question")
IMAGE_FORMATS = ("png", "jpg", "webp")
#: Kinds served as a file on the media host (the others are returned in the answer itself).
MEDIA_KINDS = ("image", "video", "audio", "3d")
#: An LLM's recipe task: this and its vendor ("chat:openai"), the vendor's JSON its answer.
CHAT_TASK = "chat:"
#: The one format the emulator writes for each non-image media kind.
KIND_FORMATS = {"video": "mp4", "audio": "wav", "3d": "glb"}


@dataclass(frozen=True)
class Recipe:
    model: str
    task: str
    kind: str
    fmt: str
    params: str
    seed: int
    inputs: tuple[tuple[str, tuple[Source, ...]], ...] = ()

    @property
    def values(self) -> dict[str, Any]:
        return json.loads(self.params)  # type: ignore[no-any-return]


def output_format(spec: ModelSpec, params: Mapping[str, Any]) -> str:
    """The output's file extension ("" for text and JSON outputs)."""
    if spec.output in ("text", "json"):
        return ""
    if spec.output in ("audio", "3d"):
        return KIND_FORMATS[spec.output]
    if spec.parameters is None:
        fmt = str(params.get("output_format", "webp")).lower()
        if spec.output == "video":
            return "mp4"
        return fmt if fmt in IMAGE_FORMATS or not spec.directory else "png"
    value = params.get(spec.format_field) if spec.format_field else None
    fmt = str(value or spec.default_format or ("mp4" if spec.output == "video" else "png")).lower()
    fmt = "jpg" if fmt == "jpeg" else fmt
    known = IMAGE_FORMATS if spec.output == "image" else ("mp4",)
    # A format the entry does not pin down and the emulator cannot write: answer in its default.
    return fmt if fmt in known else known[0]


def make_recipe(
    spec: ModelSpec, params: Mapping[str, Any], seed: int, sources: Mapping[str, Sequence[Source]]
) -> Recipe:
    """The recipe of a job: media fields travel as sources, everything else as canonical JSON."""
    plain = {k: v for k, v in params.items() if k not in sources}
    task = spec.task or ("text" if spec.output == "text" else "text-to-image")
    if spec.chat:
        task = CHAT_TASK + spec.chat
    return Recipe(
        model=spec.name,
        task=task,
        kind=spec.output,
        fmt=output_format(spec, params),
        params=json.dumps(plain, sort_keys=True, separators=(",", ":")),
        seed=seed,
        inputs=tuple((name, tuple(items)) for name, items in sorted(sources.items())),
    )


def prompt_of(values: Mapping[str, Any]) -> str:
    for name in PROMPT_FIELDS:
        if isinstance(values.get(name), str):
            return str(values[name])
    return ""


def image_size(values: Mapping[str, Any]) -> tuple[int, int]:
    """Text-to-image size: a named ratio's, `custom` width x height rounded to 16, else 1024 square."""
    aspect = values.get("aspect_ratio")
    if isinstance(aspect, str) and aspect in ASPECT_RATIOS:
        return ASPECT_RATIOS[aspect]
    if (aspect in (None, "custom")) and "width" in values and "height" in values:
        return round16(int(values["width"])), round16(int(values["height"]))
    return (1024, 1024)


def _number(values: Mapping[str, Any], names: Sequence[str], default: float) -> float:
    for name in names:
        value = values.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.rstrip("x").replace(".", "", 1).isdigit():
            return float(value.rstrip("x"))
    return default


def render_recipe(recipe: Recipe, inputs: Mapping[str, Sequence[bytes]]) -> bytes:
    """The output bytes of an image, video, audio or 3D recipe, given the bytes of its inputs."""
    values = recipe.values
    prompt = prompt_of(values)
    if recipe.kind == "audio":
        return render_wav(recipe.model, prompt, recipe.seed, _number(values, DURATION_FIELDS, 2.0))
    if recipe.kind == "3d":
        return render_glb(recipe.model, recipe.seed)
    first = next((items[0] for _, items in sorted(inputs.items()) if items), None)
    quality = int(_number(values, ("output_quality",), 80))
    footer = f"segmind-emulator · {recipe.model} · seed {recipe.seed}"
    img: Image.Image
    if recipe.task == "background-removal" and first is not None:
        img = transforms.remove_background(first)
    elif recipe.task == "upscale" and first is not None:
        factor = _number(values, UPSCALE_FIELDS, 2.0)
        large = transforms.upscale_png(first, factor) if recipe.fmt == "png" else None
        if large is not None:
            return large
        img = transforms.upscale(first, factor)
    elif recipe.task == "image-edit" and first is not None:
        img = transforms.edit(first, prompt, recipe.seed, values.get("aspect_ratio"), recipe.model)
    elif recipe.kind == "video":
        still = (
            open_image(first)
            if first is not None
            else draw_image(recipe.model, prompt, recipe.seed, (512, 512))
        )
        return image_to_video(still, prompt, footer, _number(values, DURATION_FIELDS, 5.0))
    else:
        img = draw_image(recipe.model, prompt, recipe.seed, image_size(values), salt=recipe.params)
        if first is not None:
            img = transforms.inset(img, first)
    return encode(img, recipe.fmt, quality)


def text_output(recipe: Recipe, inputs: Mapping[str, Sequence[bytes]]) -> Any:
    """The output of a text (a caption) or JSON recipe."""
    values = recipe.values
    if recipe.task.startswith(CHAT_TASK):
        return chat_answer(recipe.task[len(CHAT_TASK) :], recipe.model, values, recipe.seed)
    if recipe.kind == "json":
        return {"text": f"Emulated {recipe.model} output", "seed": recipe.seed}
    images = [data for _, items in sorted(inputs.items()) for data in items]
    return transforms.caption(recipe.model, prompt_of(values), images)


def _content_text(content: Any) -> str:
    """A message's text: its string, or its text parts joined (OpenAI's and Anthropic's part lists)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p)
    return ""


def chat_answer(vendor: str, model: str, values: Mapping[str, Any], seed: int) -> str:
    """An LLM's answer as Segmind's v2 result carries it: the vendor's chat JSON, as a JSON string.

    The reply quotes the last user message (else the prompt field), so a test can tell answers apart;
    tokens are counted as words of the messages and of the reply.
    """
    messages = [m for m in values.get("messages") or () if isinstance(m, Mapping)]
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    asked = users[-1] if users else prompt_of(values)
    reply = f"Emulated {model} reply to: {asked}"
    given = sum(len(_content_text(m.get("content")).split()) for m in messages) or len(asked.split())
    made = len(reply.split())
    answer: dict[str, Any]
    if vendor == "anthropic":
        answer = {
            "id": f"msg_emulated_{seed}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": given, "output_tokens": made},
        }
    else:
        answer = {
            "id": f"chatcmpl-emulated-{seed}",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": given, "completion_tokens": made, "total_tokens": given + made},
        }
    return json.dumps(answer)
