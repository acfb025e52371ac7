"""The model catalog: the loader, each entry, and payload validation (every flux-1.1-pro rule ported
from the old pydantic schemas, plus the rules of the other catalog models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from segmind_provider.catalog import (
    ModelEntry,
    directory_models,
    estimate_cost,
    expected_output_format,
    get_model,
    models,
    typical_seconds,
    validate_payload,
)
from segmind_provider.catalog.docs import render_markdown
from segmind_provider.catalog.entry import parse_entry
from segmind_provider.exceptions import SegmindValidationError

MODEL = "flux-1.1-pro"
ROOT = Path(__file__).resolve().parents[2]

# The payload of the model page's own example: it must pass untouched.
SEED_PAYLOAD: dict[str, Any] = {
    "seed": 12345,
    "width": 1024,
    "height": 1024,
    "prompt": "A photo of an astronaut with a mirrored helmet standing in a field of sunflowers.",
    "aspect_ratio": "1:1",
    "output_format": "png",
    "output_quality": 80,
    "safety_tolerance": 2,
    "prompt_upsampling": False,
}

#: The chat models whose stored page is the older layout (no field marked required).
OLDER_CHAT_PAGES = (
    "deepseek-reasoner",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4o",
    "gpt-5-mini",
    "llama-v3-8b-instruct",
    "llama-v3p1-70b-instruct",
    "llama-v3p1-8b-instruct",
    "mixtral-8x22b-instruct",
    "o3",
    "o4-mini",
)
#: Each model page's example request (as the stored page gives it).
PAGE_EXAMPLES: dict[str, dict[str, Any]] = {
    "flux-1.1-pro": SEED_PAYLOAD,
    "flux-kontext-pro": {
        "prompt": "make this a real photograph",
        "input_image": "https://segmind-resources.s3.amazonaws.com/input/e9150752-kontext-pro-ip.webp",
        "aspect_ratio": "match_input_image",
        "output_format": "png",
        "safety_tolerance": 2,
    },
    "bg-removal-v2": {"image": "https://www.segmind.com/bg-removal.jpg", "type": "transparent"},
    "bria-eraser": {  # the page's example without its required image (a cut example): the page's default added
        "image": "https://segmind-resources.s3.amazonaws.com/input/eb8b89ca-9506-4e67-8356-6214f5f6162e-4d423914-87ba-4e92-8f28-21538c9c6154.jpeg",
        "mask": "https://segmind-resources.s3.amazonaws.com/examples/sample-mask-img.jpg",
        "mask_type": "manual",
        "visual_input_content_moderation": True,
        "visual_output_content_moderation": True,
    },
    "clarity-upscaler": {
        "seed": 1337,
        "image": "https://segmind-sd-models.s3.amazonaws.com/display_images/clarity_upscale_input.png",
        "prompt": "masterpiece, best quality, highres, <lora:more_details:0.5> <lora:SDXLrender_v2.0:1>",
        "dynamic": 6,
        "handfix": "disabled",
        "sharpen": 0,
        "sd_model": "juggernaut_reborn.safetensors [338b85bc4f]",
        "scheduler": "DPM++ 3M SDE Karras",
        "creativity": 0.35,
        "downscaling": False,
        "resemblance": 0.6,
        "scale_factor": 1,
        "tiling_width": 112,
        "output_format": "png",
        "tiling_height": 144,
        "negative_prompt": "(worst quality, low quality, normal quality:2) JuggernautNegative-neg",
        "num_inference_steps": 18,
        "downscaling_resolution": 768,
    },
    "kling-o1-image-to-video": {
        "prompt": "A seamless transformation of a man driving a vehicle and crashing",
        "start_image_url": "https://segmind-resources.s3.amazonaws.com/output/seedance_1.5_input.webp",
        "end_image_url": "https://segmind-resources.s3.amazonaws.com/output/output-1767723467082.png",
        "duration": 5,
    },
    "esrgan": {
        "image": "https://www.segmind.com/butterfly.png",
        "scale": 2,
        "output_format": "jpeg",
        "quality": 95,
    },
    "faceswap-v5": {
        "target_image": "https://segmind-resources.s3.amazonaws.com/input/d823dde1-aaae-4231-87b7-1d472bc71cef-faceswap-v5-input.png",
        "source_image": "https://segmind-inference-inputs.s3.amazonaws.com/48892b17-762c-4de5-b6d8-f99d8e139115-black-man-image.jpeg",
        "seed": 8005332,
        "image_format": "png",
        "quality": 95,
    },
    "faceswap-v2": {  # the page's sample sends "sample text" for its files: the newer page's files here
        "source_img": "https://segmind-sd-models.s3.us-east-1.amazonaws.com/elon.jpg",
        "target_img": "https://segmind-sd-models.s3.amazonaws.com/display_images/faceswapv2_target.jpg",
        "input_faces_index": "0",
        "source_faces_index": "0",
        "face_restore": "codeformer-v0.1.0.pth",
        "base64": False,
    },
    "sound-generation": {"text": "Looking good", "duration_seconds": 1, "prompt_influence": 0.3},
    "svd": {
        "image": "https://segmind-sd-models.s3.amazonaws.com/outputs/svd_input.png",
        "fps": 7,
        "motion": 127,
        "seed": 452361789,
        "cond_aug": 0.1,
        "frames": 14,
        "resize_method": "maintain_aspect_ratio",
        "base64": False,
    },
    "deepseek-chat": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
    "claude-4-sonnet": {
        "instruction": "You are a helpful assistant.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": "iVBORw0KGgoAAAANSUhEUgA...",
                        },
                    },
                ],
            }
        ],
    },
    "nano-banana": {
        "prompt": "Dancing Banana",
        "image_urls": [
            "https://segmind-inference-inputs.s3.amazonaws.com/5ead6a2e-3e8d-4d07-a86d-5777fc6cb6f9-09a99645-3171-4742-be08-dfcfe7f0a4b2-1304f734-929b-4047-822d-4f59fca2179a-40457f0b-d422-4525-b3a5-19633a9cdac0.png"
        ],
        "aspect_ratio": "1:1",
        "response_modalities": "TEXT_AND_IMAGE",
    },
    **{
        slug: {  # the older layout's sample, shared by these chat models
            "messages": [
                {"role": "user", "content": "tell me a joke on cats"},
                {"role": "assistant", "content": "here is a joke about cats..."},
                {"role": "user", "content": "now a joke on dogs"},
            ]
        }
        for slug in OLDER_CHAT_PAGES
    },
    "imagen": {
        "prompt": " White fluffy bear toy is sleeping in a children's room, on the floor of a baby bedroom with toy"
        " boxes and toys around, in the style of photorealistic 3D rendering",
        "aspect_ratio": "1:1",
        "safety_filter_level": "BLOCK_LOW_AND_ABOVE",
        "person_generation": "ALLOW_ADULT",
    },
    "imagen-4": {
        "prompt": "A cozy cabin in the snowy mountains at sunrise, soft warm light, ultra-detailed, cinematic atmosphere",
        "negative_prompt": "blurry, pixelated",
        "aspect_ratio": "4:3",
    },
    "insta-depth": {
        "prompt": "Photo of a woman wearing a Superman costume",
        "negative_prompt": "lowquality, badquality, sketches",
        "face_image": "https://segmind-sd-models.s3.amazonaws.com/display_images/insta-depth-ip.png",
        "pose_image": "https://segmind-sd-models.s3.amazonaws.com/display_images/insta-dept-pose.png",
        "num_inference_steps": 10,
        "guidance_scale": 3,
        "seed": 354849415,
        "base64": False,
    },
    "sd1.5-controlnet-depth": {
        "image": "https://segmind.com/depth.jpeg",
        "samples": 1,
        "prompt": "young african american man, black suit, smiling, white background",
        "negative_prompt": "mangled ears, Disfigured, cartoon, blurry, nude",
        "scheduler": "UniPC",
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "strength": 1,
        "seed": 9715432854,
        "base64": False,
    },
    "sam-img2img": {"image": "https://segmind.com/kitchen.jpg"},
    "sam-v2-image": {
        "base64": False,
        "image": "https://segmind-sd-models.s3.amazonaws.com/display_images/sam-v2-ip.jpg",
        "overlay_mask": True,
        "prompt": "boy",
    },
    "recraft-v3-svg": {
        "size": "1024x1024",
        "style": "any",
        "prompt": 'a portrait of a cute red panda, smiling, holding a sign that has the title "recraft-it", against a red'
        " background",
    },
    "llava-v1.6": {
        "images": "https://segmind-sd-models.s3.amazonaws.com/display_images/llava-input.jpg",
        "prompt": "Describe meta data of the image in this format, keep them short and factually correct",
    },
}
SLUGS = sorted(PAGE_EXAMPLES)


def problems(payload: Any, model: str = MODEL, **kw: Any) -> str:
    with pytest.raises(SegmindValidationError) as info:
        validate_payload(model, payload, **kw)
    return str(info.value)


# --- the loader and the entries ------------------------------------------------------------


def test_the_catalog_holds_its_models_sorted_by_slug() -> None:
    assert [m.slug for m in models()] == SLUGS
    assert get_model("no-such-model") is None
    assert isinstance(get_model(MODEL), ModelEntry)


@pytest.mark.parametrize("slug", SLUGS)
def test_each_entry_is_well_formed(slug: str) -> None:
    entry = get_model(slug)
    assert entry is not None
    assert entry.page == f"https://www.segmind.com/models/{slug}/api"
    assert entry.typical_seconds > 0 and entry.price_usd > 0
    assert entry.title and entry.description and entry.price_note
    # a field is required, but on the older layout's chat pages, which mark none (messages included)
    assert any(p.required for p in entry.parameters.values()) or slug in OLDER_CHAT_PAGES
    for name, param in entry.parameters.items():
        assert param.name == name and param.description, name
        if param.default is not None:  # a page default is itself a valid value
            validate_payload(slug, {**PAGE_EXAMPLES[slug], name: param.default})
        for value in param.enum or ():
            validate_payload(slug, {**PAGE_EXAMPLES[slug], name: value})


@pytest.mark.parametrize("slug", SLUGS)
def test_each_page_example_validates_unchanged(slug: str) -> None:
    assert validate_payload(slug, PAGE_EXAMPLES[slug]) == PAGE_EXAMPLES[slug]


def test_file_fields_and_both_encodings_are_covered() -> None:
    fields = {m.slug: {n: p.encoding for n, p in m.media_fields().items()} for m in models()}
    assert fields["flux-1.1-pro"] == {"image_prompt": "url"}
    assert fields["flux-kontext-pro"] == {"input_image": "url"}
    assert fields["clarity-upscaler"] == {"image": "base64", "mask": "base64"}
    assert fields["kling-o1-image-to-video"] == {"start_image_url": "url", "end_image_url": "url"}
    assert {e for f in fields.values() for e in f.values()} == {"url", "base64"}
    assert {m.output_kind for m in models()} == {"image", "video", "audio", "text"}


def test_a_broken_entry_lists_every_problem_with_its_source() -> None:
    data = {
        "slug": "x",
        "title": "X",
        "page": "https://example.com",
        "task": "painting",
        "output": {"kind": "image", "format_field": "fmt", "default_format": None},
        "typical_seconds": "slow",
        "price_usd": 0.1,
        "parameters": {
            "a": {"type": "integer", "maximun": 3},
            "b": {"type": "string", "media": "image"},
        },
        "rules": [{"kind": "only_with", "fields": ["a"], "field": "zz", "value": 1}, {"kind": "magic"}],
        "colour": "red",
    }
    with pytest.raises(ValueError) as info:
        parse_entry(data, "x.json")
    message = str(info.value)
    for fragment in (
        "x.json",
        "unknown key 'colour'",
        "'painting' is not one of",
        "typical_seconds: expected int/float",
        "parameters.a: unknown key 'maximun'",
        "media and encoding go together",
        "output.format_field: 'fmt' is not a parameter",
        "'zz' is not a parameter",
        "unknown rule kind 'magic'",
    ):
        assert fragment in message


def test_parse_entry_builds_what_the_spec_names() -> None:
    entry = get_model("flux-kontext-pro")
    assert entry is not None
    assert (entry.task, entry.output_kind, entry.output_format_field, entry.default_output_format) == (
        "image-edit",
        "image",
        "output_format",
        "png",
    )
    rule = {"kind": "max_when_present", "field": "safety_tolerance", "maximum": 2, "present": ["input_image"]}
    assert entry.rules == (rule,)
    with pytest.raises(TypeError):
        entry.parameters["x"] = entry.parameters["seed"]  # type: ignore[index]


# --- estimates ----------------------------------------------------------------------------


def test_estimate_cost_and_typical_seconds_come_from_the_entry() -> None:
    for entry in models():
        assert estimate_cost(entry.slug) == entry.price_usd
        assert estimate_cost(entry.slug, PAGE_EXAMPLES[entry.slug]) == entry.price_usd
        assert typical_seconds(entry.slug) == entry.typical_seconds
    # Figures the pages give (segmind.com/models/<slug>/api).
    assert estimate_cost("flux-kontext-pro") == 0.05
    assert typical_seconds("flux-1.1-pro") == 14.05
    kling = typical_seconds("kling-o1-image-to-video")
    assert kling is not None and kling > 60  # minutes long
    assert estimate_cost("unknown-model") is None
    assert typical_seconds("unknown-model") is None


@pytest.mark.parametrize(
    ("model", "payload", "expected"),
    [
        (MODEL, {}, "webp"),
        (MODEL, {"output_format": "png"}, "png"),
        (MODEL, {"output_format": "jpg"}, "jpg"),
        (MODEL, {"output_format": 3}, None),
        ("flux-kontext-pro", {}, "png"),
        ("flux-kontext-pro", {"output_format": "JPG"}, "jpg"),
        ("bg-removal-v2", {"type": "white"}, None),
        ("clarity-upscaler", {}, None),
        ("clarity-upscaler", {"output_format": "png"}, "png"),
        ("kling-o1-image-to-video", {"duration": 10}, "mp4"),
        ("llava-v1.6", {}, None),
        ("other", {"output_format": "png"}, None),
    ],
)
def test_expected_output_format(model: str, payload: dict[str, Any], expected: str | None) -> None:
    assert expected_output_format(model, payload) == expected


# --- the generated docs page ----------------------------------------------------------------


def test_docs_models_md_is_the_generators_output() -> None:
    """Fails when an entry changed and docs/models.md was not regenerated (see the page's header)."""
    expected = render_markdown(models(), directory_models())
    assert (ROOT / "docs" / "models.md").read_text(encoding="utf-8") == expected


def test_the_module_prints_the_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segmind_provider.catalog"], capture_output=True, text=True, check=True
    )
    assert done.stdout == render_markdown(models(), directory_models())
    assert "| `start_image_url` | string | yes |" in done.stdout
    assert "image, base64" in done.stdout and "~144.54 s (about 2.4 min)" in done.stdout


# --- flux-1.1-pro, ported from the pydantic schema tests -------------------------------------


def test_seed_example_passes_unchanged() -> None:
    result = validate_payload(MODEL, SEED_PAYLOAD)
    assert result == SEED_PAYLOAD
    assert result is not SEED_PAYLOAD


def test_only_given_keys_are_returned() -> None:
    assert validate_payload(MODEL, {"prompt": "a cat"}) == {"prompt": "a cat"}


def test_every_option_accepted_at_its_limits() -> None:
    payload = {
        "prompt": "a cat",
        "aspect_ratio": "custom",
        "width": 256,
        "height": 1440,
        "image_prompt": "https://example.com/ref.png",
        "output_format": "webp",
        "output_quality": 0,
        "prompt_upsampling": True,
        "safety_tolerance": 5,
        "seed": 0,
    }
    assert validate_payload(MODEL, payload) == payload


@pytest.mark.parametrize("ratio", ["custom", "1:1", "16:9", "2:3", "3:2", "4:5", "5:4", "9:16", "3:4", "4:3"])
def test_every_aspect_ratio_accepted(ratio: str) -> None:
    assert validate_payload(MODEL, {"prompt": "p", "aspect_ratio": ratio})["aspect_ratio"] == ratio


@pytest.mark.parametrize(
    ("field", "value", "fragments"),
    [
        ("prompt", "", ["prompt", "''", "non-empty string"]),
        ("prompt", "   ", ["prompt", "whitespace"]),
        ("prompt", 123, ["prompt", "123", "not a valid string"]),
        ("aspect_ratio", "2:1", ["aspect_ratio", "'2:1'", "'16:9'", "'custom'"]),
        ("aspect_ratio", "1-1", ["aspect_ratio", "'1-1'"]),
        ("width", 255, ["width", "255", "256 to 1440"]),
        ("width", 1441, ["width", "1441", "256 to 1440"]),
        ("height", 100, ["height", "100", "256 to 1440"]),
        ("width", "wide", ["width", "'wide'", "not a valid integer"]),
        ("height", 512.0, ["height", "512.0", "not a valid integer"]),
        ("image_prompt", "ftp://example.com/a.png", ["image_prompt", "ftp://", "http"]),
        ("image_prompt", "a red car", ["image_prompt", "'a red car'", "http"]),
        ("image_prompt", "https://", ["image_prompt", "https://"]),
        ("output_format", "jpeg", ["output_format", "'jpeg'", "'webp', 'jpg', 'png'"]),
        ("output_format", "PNG", ["output_format", "'PNG'"]),
        ("output_quality", 101, ["output_quality", "101", "0 to 100"]),
        ("output_quality", -1, ["output_quality", "-1", "0 to 100"]),
        ("output_quality", "5.5", ["output_quality", "'5.5'", "not a valid integer"]),
        ("prompt_upsampling", "yes", ["prompt_upsampling", "'yes'", "true or false"]),
        ("prompt_upsampling", 1, ["prompt_upsampling", "1", "true or false"]),
        ("prompt_upsampling", None, ["prompt_upsampling", "None", "default False"]),
        ("safety_tolerance", 0, ["safety_tolerance", "0", "from 1 to 5"]),
        ("safety_tolerance", 6, ["safety_tolerance", "6", "from 1 to 5"]),
        ("safety_tolerance", True, ["safety_tolerance", "True", "not a valid integer"]),
        ("seed", -1, ["seed", "-1", ">= 0"]),
        ("seed", "abc", ["seed", "'abc'"]),
        ("seed", 1.5, ["seed", "1.5"]),
    ],
)
def test_each_field_names_field_value_and_what_is_allowed(
    field: str, value: Any, fragments: list[str]
) -> None:
    payload = {"prompt": "a cat", "aspect_ratio": "custom", field: value}
    message = problems(payload)
    assert "(1 problem)" in message
    assert f"- {field}: " in message
    for fragment in fragments:
        assert fragment in message


def test_missing_prompt() -> None:
    message = problems({"output_format": "png"})
    assert "- prompt: required but missing; allowed: a non-empty string" in message


def test_every_problem_is_listed_at_once() -> None:
    message = problems(
        {
            "aspect-ratio": "16:9",
            "width": 5000,
            "output_format": "gif",
            "output_quality": 200,
            "safety_tolerance": 9,
            "seed": -3,
        }
    )
    # width is wrong twice: out of range, and not allowed with the default ratio "1:1".
    assert "(8 problems)" in message
    for field in (
        "prompt",
        "aspect-ratio",
        "width",
        "output_format",
        "output_quality",
        "safety_tolerance",
        "seed",
    ):
        assert f"- {field}:" in message


def test_unknown_field_rejected_with_allowed_names_and_a_suggestion() -> None:
    message = problems({"prompt": "p", "aspect-ratio": "16:9"})
    assert "aspect-ratio: unknown field (did you mean 'aspect_ratio'?)" in message
    assert "allowed fields: aspect_ratio, height, image_prompt, output_format" in message
    assert "'16:9'" in message


def test_unknown_field_without_a_close_name() -> None:
    message = problems({"prompt": "p", "zzz": 1})
    assert "zzz: unknown field;" in message
    assert "did you mean" not in message


def test_validation_error_stops_retries() -> None:
    with pytest.raises(AirflowFailException):
        validate_payload(MODEL, {})


def test_long_values_are_shortened_in_the_message() -> None:
    message = problems({"prompt": "x" * 500, "output_format": "y" * 500})
    assert "y" * 100 not in message
    assert "..." in message


def test_payload_must_be_a_mapping() -> None:
    with pytest.raises(SegmindValidationError, match="JSON object"):
        validate_payload(MODEL, ["prompt"])  # type: ignore[arg-type]
    with pytest.raises(SegmindValidationError, match="JSON object"):
        validate_payload("unknown-model", "prompt=x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (256, 256),
        (1440, 1440),
        (1024, 1024),
        (1000, 1008),
        (1030, 1024),
        (1032, 1040),
        (1439, 1440),
        (263, 256),
    ],
)
def test_custom_sides_are_rounded_to_the_nearest_multiple_of_16(given: int, sent: int) -> None:
    result = validate_payload(
        MODEL, {"prompt": "p", "aspect_ratio": "custom", "width": given, "height": given}
    )
    assert result["width"] == sent
    assert result["height"] == sent


def test_rounding_does_not_touch_the_callers_payload() -> None:
    payload = {"prompt": "p", "aspect_ratio": "custom", "width": 1000}
    validate_payload(MODEL, payload)
    assert payload["width"] == 1000


@pytest.mark.parametrize("ratio", ["1:1", "16:9", None])
def test_non_default_size_with_a_named_ratio_is_refused(ratio: str | None) -> None:
    payload: dict[str, Any] = {"prompt": "p", "width": 512}
    if ratio is not None:
        payload["aspect_ratio"] = ratio
    message = problems(payload)
    shown = ratio or "1:1"
    assert f"width only applies with aspect_ratio='custom'; with aspect_ratio='{shown}'" in message
    assert "given 512" in message


def test_both_sides_reported_with_a_named_ratio() -> None:
    message = problems({"prompt": "p", "aspect_ratio": "4:3", "width": 800, "height": "600"})
    assert "(2 problems)" in message
    assert "- width:" in message
    assert "- height:" in message


def test_default_size_with_a_named_ratio_is_accepted() -> None:
    payload = {"prompt": "p", "aspect_ratio": "16:9", "width": 1024, "height": "1024"}
    assert validate_payload(MODEL, payload) == {**payload, "height": 1024}


def test_size_problems_reported_with_field_problems() -> None:
    message = problems({"aspect_ratio": "16:9", "width": 512})
    assert "(2 problems)" in message
    assert "- prompt: required" in message
    assert "- width: width only applies" in message


def test_an_invalid_ratio_is_reported_once_not_as_a_size_problem() -> None:
    message = problems({"prompt": "p", "aspect_ratio": "7:3", "width": 512})
    assert "(1 problem)" in message and "- aspect_ratio:" in message


def test_integer_text_from_templates_becomes_int() -> None:
    result = validate_payload(
        MODEL,
        {
            "prompt": "p",
            "seed": "7",
            "output_quality": " 90 ",
            "safety_tolerance": "+3",
            "aspect_ratio": "custom",
            "width": "512",
        },
    )
    assert (result["seed"], result["output_quality"], result["safety_tolerance"], result["width"]) == (
        7,
        90,
        3,
        512,
    )


@pytest.mark.parametrize(("text", "value"), [("True", True), ("false", False), (" TRUE ", True)])
def test_boolean_text_from_templates_becomes_bool(text: str, value: bool) -> None:
    assert validate_payload(MODEL, {"prompt": "p", "prompt_upsampling": text})["prompt_upsampling"] is value


def test_seed_may_be_null() -> None:
    assert validate_payload(MODEL, {"prompt": "p", "seed": None}) == {"prompt": "p", "seed": None}


def test_models_without_an_entry_pass_through_unchanged() -> None:
    payload = {"anything": object(), "aspect-ratio": "weird", "seed": "not checked"}
    result = validate_payload("some-other-model", payload)
    assert result == payload
    assert result is not payload


def test_an_enum_lists_its_values_once() -> None:
    message = problems({"prompt": "a cat", "aspect_ratio": "2:1"})
    assert "not one of the allowed values" in message and message.count("'16:9'") == 1


# --- the other models' rules ---------------------------------------------------------------


def test_kontext_safety_tolerance_is_at_most_2_with_an_input_image() -> None:
    base = {"prompt": "p", "safety_tolerance": 6}
    assert validate_payload("flux-kontext-pro", base) == base  # text only: 0..6
    message = problems({**base, "input_image": "https://example.com/a.png"}, "flux-kontext-pro")
    assert "- safety_tolerance: at most 2 when input_image is given; given 6" in message
    # The same when input_files fills the image after validation.
    message = problems(base, "flux-kontext-pro", filled_later=["input_image"])
    assert "at most 2 when input_image is given" in message


def test_kling_duration_text_becomes_one_of_its_values() -> None:
    example = PAGE_EXAMPLES["kling-o1-image-to-video"]
    assert validate_payload("kling-o1-image-to-video", {**example, "duration": "10"})["duration"] == 10
    message = problems({**example, "duration": 7}, "kling-o1-image-to-video")
    assert "- duration: not one of the allowed values; given 7; allowed: one of 5, 10" in message


def test_number_fields_take_numbers_and_number_text() -> None:
    example = PAGE_EXAMPLES["clarity-upscaler"]
    result = validate_payload("clarity-upscaler", {**example, "creativity": "0.5", "dynamic": "7"})
    assert (result["creativity"], result["dynamic"]) == (0.5, 7)
    message = problems({**example, "creativity": 1.5, "sharpen": "lots", "dynamic": True}, "clarity-upscaler")
    assert "(3 problems)" in message
    assert "- creativity: greater than the maximum 1; given 1.5; allowed: a number from 0 to 1" in message
    assert "- sharpen: not a valid number" in message and "- dynamic: not a valid number" in message


@pytest.mark.parametrize(
    "value",
    ["aGVsbG8gd29ybGQ=", "data:image/png;base64,iVBORw0KGgo=", "https://example.com/a.png", "aGVs\nbG8="],
)
def test_a_base64_field_takes_base64_data_or_a_url(value: str) -> None:
    payload = {**PAGE_EXAMPLES["clarity-upscaler"], "image": value}
    assert validate_payload("clarity-upscaler", payload)["image"] == value


@pytest.mark.parametrize("value", ["s3://bucket/photo.png", "/data/photo.png", "", "not base64!"])
def test_a_base64_field_refuses_paths_and_other_text(value: str) -> None:
    message = problems({**PAGE_EXAMPLES["clarity-upscaler"], "image": value}, "clarity-upscaler")
    assert "- image: neither an http(s) URL nor base64 data (use input_files" in message


def test_a_url_field_refuses_a_path_and_points_to_input_files() -> None:
    message = problems({"image": "file:///data/shoe.png"}, "bg-removal-v2")
    assert "- image: not an http(s) URL (use input_files for a local file or bucket path)" in message


def test_null_is_taken_only_where_the_default_is_none() -> None:
    assert validate_payload("bg-removal-v2", {"image": "https://e.com/a.png", "custom_color": None})
    message = problems({"image": "https://e.com/a.png", "type": None}, "bg-removal-v2")
    assert "- type: null is not allowed; leave the field out to get the default 'transparent'" in message
    message = problems({"images": None, "prompt": "p"}, "llava-v1.6")
    assert "- images: null is not allowed for a required field" in message


def test_fields_filled_later_count_as_present_and_must_take_files() -> None:
    assert validate_payload("bg-removal-v2", {"type": "white"}, filled_later=["image"]) == {"type": "white"}
    message = problems(
        {"image": "https://e.com/a.png"}, "bg-removal-v2", filled_later=["image", "type", "imag"]
    )
    assert "(3 problems)" in message
    assert "- image: given both in the payload and as an input file; keep one" in message
    assert "- type: takes no file, so input_files cannot fill it" in message
    assert "- imag: unknown field (did you mean 'image'?)" in message
