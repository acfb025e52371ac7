"""Payload validation: every flux-1.1-pro rule, the registry, and the shape of the error message."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from segmind_provider import schemas
from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.schemas import expected_output_format, get_schema, register_schema, validate_payload
from segmind_provider.schemas.flux_1_1_pro import FluxPro11Payload, round_to_step

MODEL = "flux-1.1-pro"

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


def problems(payload: dict[str, Any]) -> str:
    with pytest.raises(SegmindValidationError) as info:
        validate_payload(MODEL, payload)
    return str(info.value)


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
        ("prompt", 123, ["prompt", "123", "valid string"]),
        ("aspect_ratio", "2:1", ["aspect_ratio", "'2:1'", "'16:9'", "'custom'"]),
        ("aspect_ratio", "1-1", ["aspect_ratio", "'1-1'"]),
        ("width", 255, ["width", "255", "256 to 1440"]),
        ("width", 1441, ["width", "1441", "256 to 1440"]),
        ("height", 100, ["height", "100", "256 to 1440"]),
        ("width", "wide", ["width", "'wide'", "valid integer"]),
        ("height", 512.0, ["height", "512.0", "valid integer"]),
        ("image_prompt", "ftp://example.com/a.png", ["image_prompt", "ftp://", "http"]),
        ("image_prompt", "a red car", ["image_prompt", "'a red car'", "http"]),
        ("image_prompt", "https://", ["image_prompt", "https://"]),
        ("output_format", "jpeg", ["output_format", "'jpeg'", "'webp', 'jpg', 'png'"]),
        ("output_format", "PNG", ["output_format", "'PNG'"]),
        ("output_quality", 101, ["output_quality", "101", "0 to 100"]),
        ("output_quality", -1, ["output_quality", "-1", "0 to 100"]),
        ("output_quality", "5.5", ["output_quality", "'5.5'", "valid integer"]),
        ("prompt_upsampling", "yes", ["prompt_upsampling", "'yes'", "true or false"]),
        ("prompt_upsampling", 1, ["prompt_upsampling", "1", "true or false"]),
        ("prompt_upsampling", None, ["prompt_upsampling", "None"]),
        ("safety_tolerance", 0, ["safety_tolerance", "0", "1 (strict) to 5"]),
        ("safety_tolerance", 6, ["safety_tolerance", "6", "1 (strict) to 5"]),
        ("safety_tolerance", True, ["safety_tolerance", "True", "valid integer"]),
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
    from airflow.sdk.exceptions import AirflowFailException

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


# --- width / height rules -------------------------------------------------------------


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


def test_round_to_step_rounds_halves_up() -> None:
    assert [round_to_step(v) for v in (8, 7, 24, 1016)] == [16, 0, 32, 1024]


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


# --- template-rendered values -------------------------------------------------------------


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
    assert result["seed"] == 7
    assert result["output_quality"] == 90
    assert result["safety_tolerance"] == 3
    assert result["width"] == 512


@pytest.mark.parametrize(("text", "value"), [("True", True), ("false", False), (" TRUE ", True)])
def test_boolean_text_from_templates_becomes_bool(text: str, value: bool) -> None:
    assert validate_payload(MODEL, {"prompt": "p", "prompt_upsampling": text})["prompt_upsampling"] is value


def test_seed_may_be_null() -> None:
    assert validate_payload(MODEL, {"prompt": "p", "seed": None}) == {"prompt": "p", "seed": None}


# --- registry -------------------------------------------------------------------------


def test_models_without_schema_pass_through_unchanged() -> None:
    payload = {"anything": object(), "aspect-ratio": "weird", "seed": "not checked"}
    result = validate_payload("some-other-model", payload)
    assert result == payload
    assert result is not payload
    assert get_schema("some-other-model") is None


def test_flux_schema_is_registered() -> None:
    assert get_schema(MODEL) is FluxPro11Payload


def test_registered_schema_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas, "_REGISTRY", dict(schemas._REGISTRY))

    class Tiny(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        steps: int

    register_schema("tiny-model", Tiny)
    assert get_schema("tiny-model") is Tiny
    assert validate_payload("tiny-model", {"steps": 3}) == {"steps": 3}
    with pytest.raises(SegmindValidationError) as info:
        validate_payload("tiny-model", {"steps": "x", "n": 1})
    message = str(info.value)
    assert "(2 problems)" in message
    assert "- steps:" in message
    assert "- n: unknown field" in message
    assert expected_output_format("tiny-model", {"output_format": "png"}) is None


def test_register_schema_refuses_non_models() -> None:
    with pytest.raises(TypeError):
        register_schema("x", dict)  # type: ignore[arg-type]


def test_schema_alone_reports_every_problem() -> None:
    """The schema class is usable without the registry and still lists cross-field problems."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        FluxPro11Payload.model_validate({"prompt": "", "width": 300})
    assert {err["loc"][0] for err in info.value.errors()} == {"prompt", "width"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, "webp"),
        ({"output_format": "png"}, "png"),
        ({"output_format": "jpg"}, "jpg"),
        ({"output_format": 3}, None),
    ],
)
def test_expected_output_format(payload: dict[str, Any], expected: str | None) -> None:
    assert expected_output_format(MODEL, payload) == expected


def test_expected_output_format_unknown_model() -> None:
    assert expected_output_format("other", {"output_format": "png"}) is None


def test_an_enum_lists_its_values_once() -> None:
    message = problems({"prompt": "a cat", "aspect_ratio": "2:1"})
    assert "not one of the allowed values" in message and message.count("'16:9'") == 1
