"""Properties of catalog validation over every catalog model (issue 10, "Bad input").

For each model, generated payloads that break one thing (a wrong type, a value out of range or
not allowed, a required field missing, an unknown field, blank text, a file field that is not a
URL or base64) raise SegmindValidationError naming that field, and the real operator makes no
HTTP request for them. Generated valid payloads come back equal to what was given, apart from
the documented normalisations, which the expectations below compute on their own.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmind_provider.catalog import ModelEntry, Parameter, models, validate_payload
from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator

ENTRIES = models()
SLUGS = [e.slug for e in ENTRIES]
BY_SLUG = {e.slug: e for e in ENTRIES}
Case = tuple[Any, Any]  # (value given, value expected back)

_WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_URLS = st.builds(lambda host, name: f"https://{host}.example.com/in/{name}.png", _WORD, _WORD)
_B64 = st.binary(min_size=1, max_size=48).map(lambda b: base64.b64encode(b).decode())
_ANY_JSON = st.one_of(
    st.integers(), st.text(max_size=10), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)
)


def _same(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Case]:
    return strategy.map(lambda v: (v, v))


def _integer_case(p: Parameter) -> st.SearchStrategy[Case]:
    lo = int(p.minimum) if p.minimum is not None else -(10**12)
    hi = int(p.maximum) if p.maximum is not None else 10**12
    step = int(p.multiple_of) if p.multiple_of is not None else None
    if step is not None and not p.round_to_multiple:
        values = st.integers(-(-lo // step), hi // step).map(lambda k: k * step)
    else:
        values = st.integers(lo, hi)

    def sent(v: int) -> int:  # documented: rounded to the nearest multiple, halves up
        return (v + step // 2) // step * step if step and p.round_to_multiple else v

    def as_text(v: int) -> st.SearchStrategy[str]:  # documented: integer text from templates
        return st.sampled_from([str(v), f" {v} ", f"+{v}" if v >= 0 else str(v)])

    return values.flatmap(lambda v: st.one_of(st.just(v), as_text(v)).map(lambda g: (g, sent(v))))


def _valid_case(p: Parameter) -> st.SearchStrategy[Case]:
    """A valid value for ``p`` and what validation must return for it."""
    if p.enum is not None:
        base = _same(st.sampled_from(p.enum))
        if p.type == "integer":
            base = base | st.sampled_from(p.enum).map(lambda v: (str(v), v))
    elif p.type == "integer":
        base = _integer_case(p)
    elif p.type == "number":
        lo = p.minimum if p.minimum is not None else -1e9
        hi = p.maximum if p.maximum is not None else 1e9
        floats = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        ints = st.integers(math.ceil(lo), math.floor(hi))
        base = _same(floats) | _same(ints) | ints.map(lambda i: (str(i), i))  # number text -> number
    elif p.type == "boolean":
        base = _same(st.booleans()) | st.sampled_from([("true", True), ("False", False), (" TRUE ", True)])
    elif p.media is not None:
        files = _URLS | (
            _B64 | _B64.map(lambda b: f"data:image/png;base64,{b}") if p.encoding == "base64" else _URLS
        )
        base = _same(st.lists(files, max_size=p.max_items or 3) if p.type == "array" else files)
    elif p.type == "array":
        base = _same(st.lists(st.integers(), max_size=p.max_items or 3))
    else:
        base = _same(st.text(max_size=30).filter(lambda s: len(s.strip()) >= (p.min_length or 0)))
    return base | st.just((None, None)) if p.nullable else base


@st.composite
def valid_payload(draw: st.DrawFn, entry: ModelEntry) -> tuple[dict[str, Any], dict[str, Any]]:
    """Required fields and a random subset of the others, kept within the entry's rules."""
    given: dict[str, Any] = {}
    sent: dict[str, Any] = {}
    for name, p in entry.parameters.items():
        if p.required or draw(st.booleans()):
            given[name], sent[name] = draw(_valid_case(p))
    params = entry.parameters
    for rule in entry.rules:
        if (
            rule["kind"] == "only_with"
            and sent.get(rule["field"], params[rule["field"]].default) != rule["value"]
        ):
            for name in rule["fields"]:
                given.pop(name, None)
                sent.pop(name, None)
        if rule["kind"] == "max_when_present" and any(sent.get(f) is not None for f in rule["present"]):
            name, p = rule["field"], params[rule["field"]]
            if sent.get(name) is not None and sent[name] > rule["maximum"]:
                given[name] = sent[name] = draw(st.integers(int(p.minimum or 0), rule["maximum"]))
    return given, sent


def _wrong_type(p: Parameter) -> st.SearchStrategy[Any]:
    """Values of the wrong JSON type that no documented normalisation turns into a valid one."""
    wrong: dict[str, st.SearchStrategy[Any]] = {
        "string": st.one_of(
            st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.text(), max_size=2)
        ),
        "integer": st.one_of(
            st.floats(allow_nan=False),
            st.booleans(),
            st.sampled_from(["abc", "1.5", "1e3", "", "ten", "[1]"]),
        ),
        "number": st.one_of(
            st.booleans(),
            st.just(float("nan")),
            st.just(float("inf")),
            st.sampled_from(["abc", "", "1,5", "nan"]),
        ),
        "boolean": st.one_of(
            st.integers(), st.floats(allow_nan=False), st.sampled_from(["yes", "no", "1", "on"])
        ),
        "array": st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
    }
    return wrong[p.type] if p.nullable else wrong[p.type] | st.none()


#: One-field mutations and the parameters each applies to.
MUTATIONS: list[tuple[str, Callable[[Parameter], bool]]] = [
    ("wrong_type", lambda p: True),
    ("out_of_range", lambda p: p.enum is None and (p.minimum is not None or p.maximum is not None)),
    ("not_in_enum", lambda p: p.enum is not None),
    ("blank_text", lambda p: bool(p.min_length)),
    ("bad_file", lambda p: p.media is not None and p.type == "string"),
]


def _bad_value(draw: st.DrawFn, kind: str, p: Parameter) -> Any:
    if kind == "wrong_type":
        return draw(_wrong_type(p))
    if kind == "out_of_range":
        below = [] if p.minimum is None else [st.integers(max_value=math.ceil(p.minimum) - 1)]
        above = [] if p.maximum is None else [st.integers(min_value=math.floor(p.maximum) + 1)]
        if p.type == "number":
            below += [st.floats(max_value=p.minimum, exclude_max=True, allow_infinity=False)] if below else []
            above += [st.floats(min_value=p.maximum, exclude_min=True, allow_infinity=False)] if above else []
        return draw(st.one_of(*below, *above))
    if kind == "not_in_enum":
        assert p.enum is not None
        other = st.integers() if p.type == "integer" else st.text(max_size=12)
        return draw(other.filter(lambda v: v not in p.enum and str(v).strip() not in map(str, p.enum)))
    if kind == "blank_text":
        return draw(st.sampled_from(["", " ", "\n\t  "]))
    urls_only = [
        "a red car",
        "https://",
        "ftp://host/a.png",
        "file:///tmp/a.png",
        "s3://bucket/a.png",
        "/tmp/a.png",
    ]
    return draw(st.sampled_from(urls_only if p.encoding == "url" else [*urls_only[1:], "not base64!", ""]))


@st.composite
def invalid_payload(draw: st.DrawFn, entry: ModelEntry) -> tuple[dict[str, Any], str, str]:
    """A valid payload with one thing broken; returns it, the field to be named, and the kind."""
    payload, _ = draw(valid_payload(entry))
    params = entry.parameters
    choices = [(k, n) for k, applies in MUTATIONS for n, p in params.items() if applies(p)]
    choices += [("missing", n) for n, p in params.items() if p.required]
    choices.append(("unknown", ""))
    kind, name = draw(st.sampled_from(choices))
    if kind == "unknown":
        name = draw(st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True).filter(lambda n: n not in params))
        payload[name] = draw(_ANY_JSON)
    elif kind == "missing":
        payload.pop(name, None)
    else:
        payload[name] = _bad_value(draw, kind, params[name])
    return payload, name, kind


@pytest.mark.parametrize("slug", SLUGS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_valid_payloads_come_back_as_given_apart_from_documented_normalisation(
    slug: str, data: st.DataObject
) -> None:
    given_payload, expected = data.draw(valid_payload(BY_SLUG[slug]))
    result = validate_payload(slug, given_payload)
    assert result == expected
    assert list(result) == list(given_payload)  # exactly the keys given: no defaults added


@pytest.mark.parametrize("slug", SLUGS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_invalid_payloads_raise_naming_the_field(slug: str, data: st.DataObject) -> None:
    payload, field, kind = data.draw(invalid_payload(BY_SLUG[slug]))
    with pytest.raises(SegmindValidationError) as info:
        validate_payload(slug, payload)
    message = str(info.value)
    assert f"\n- {field}: " in message, (kind, message)
    if kind == "missing":
        assert f"- {field}: required but missing" in message
    if kind == "unknown":
        assert f"- {field}: unknown field" in message


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_invalid_payload_makes_no_http_request_through_the_operator(
    emulator: SegmindEmulator, make_context: Any, data: st.DataObject
) -> None:
    entry = data.draw(st.sampled_from(ENTRIES))
    payload, field, _ = data.draw(invalid_payload(entry))
    op = SegmindOperator(task_id="bad_input", model=entry.slug, payload=payload, deferrable=False)
    with pytest.raises(SegmindValidationError, match=re.escape(f"- {field}: ")):
        op.execute(make_context())
    assert emulator.calls() == []
