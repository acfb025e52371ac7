"""The catalog and the emulator accept the same entries: both read one vocabulary file, as data."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from segmind_provider.catalog.entry import parse_entry
from segmind_provider.testing.emulator.models import KIND_LATENCY, OUTPUT_KINDS, spec_from_entry
from segmind_provider.testing.emulator.validation import RULES

VOCABULARY: dict[str, Any] = json.loads(
    resources.files("segmind_provider.catalog")
    .joinpath("data")
    .joinpath("vocabulary.json")
    .read_text("utf-8")
)


def _entry(**changes: Any) -> dict[str, Any]:
    """A shipped entry, read as data, with some changes."""
    text = (
        resources.files("segmind_provider.catalog")
        .joinpath("models")
        .joinpath("flux-1.1-pro.json")
        .read_text("utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    data = copy.deepcopy(data)
    data.update(changes)
    return data


@pytest.mark.parametrize("kind", VOCABULARY["output_kinds"])
def test_every_output_kind_is_accepted_by_both(kind: str) -> None:
    entry = _entry(output={"kind": kind, "format_field": None, "default_format": None})
    assert parse_entry(entry).output_kind == kind
    assert spec_from_entry(entry).output == kind
    assert kind in KIND_LATENCY, "a directory model of this kind needs a typical time"


def test_an_unknown_output_kind_is_refused_by_both() -> None:
    entry = _entry(output={"kind": "hologram", "format_field": None, "default_format": None})
    with pytest.raises(ValueError, match="hologram"):
        parse_entry(entry)
    with pytest.raises(ValueError, match="output"):
        spec_from_entry(entry)


@pytest.mark.parametrize("key", VOCABULARY["parameter_keys"])
def test_every_parameter_key_is_known_to_both(key: str) -> None:
    """A key one side did not know would be refused there (or its check skipped); an invented one is."""
    name, param = next(iter(_entry()["parameters"].items()))
    for parse in (parse_entry, spec_from_entry):
        known = _entry(parameters={name: {**param, key: param.get(key)}})
        try:
            parse(known)
        except ValueError as exc:  # a value problem is fine here: only the key's name is tested
            assert "unknown" not in str(exc)
        with pytest.raises(ValueError, match=f"{key}_invented"):
            parse(_entry(parameters={name: {**param, f"{key}_invented": 1}}))


def test_one_copy_of_the_words() -> None:
    """Output kinds and rule kinds come from the file: the emulator implements each rule it lists."""
    assert tuple(VOCABULARY["output_kinds"]) == OUTPUT_KINDS
    assert set(RULES) == set(VOCABULARY["rules"])


def test_an_unknown_rule_kind_is_refused_by_both() -> None:
    entry = _entry(rules=[{"kind": "sometimes", "field": "seed", "fields": [], "value": 1}])
    for parse in (parse_entry, spec_from_entry):
        with pytest.raises(ValueError, match="sometimes"):
            parse(entry)
