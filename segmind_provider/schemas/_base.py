"""Building blocks shared by the per-model payload schemas.

A schema is a pydantic v2 model in strict mode with unknown fields forbidden: a typo such as
``aspect-ratio`` must fail before any credit is spent instead of being silently ignored by the
service. Each field's ``description`` says what is allowed; the registry quotes it in error
messages, so it doubles as user-facing documentation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_INT_TEXT = re.compile(r"[+-]?\d+")


def int_from_template_text(value: Any) -> Any:
    """Turn a plain decimal integer string (what Jinja renders for ``{{ ti.map_index }}``) into an int.

    Only exact integer literals are converted ("42", " 7 "); "4.0", "1e3", "abc" and ``True``
    are left alone so that strict validation refuses them with a clear message.
    """
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    return value


def bool_from_template_text(value: Any) -> Any:
    """Turn "true"/"false" in any case (Jinja renders Python booleans as "True"/"False") into a bool.

    Nothing else is converted: "yes", "1" or ``1`` are refused, because guessing a boolean from
    them would hide mistakes.
    """
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


TemplatedInt = Annotated[int, BeforeValidator(int_from_template_text)]
TemplatedBool = Annotated[bool, BeforeValidator(bool_from_template_text)]


class Problem:
    """A cross-field problem found on the raw payload (field, value, explanation)."""

    __slots__ = ("field", "message", "value")

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message


class SegmindPayload(BaseModel):
    """Base for model payload schemas.

    Subclasses declare fields, may override :meth:`cross_field_problems` for rules that involve
    several fields, and set the ``output_format_field`` / ``default_output_format`` class
    variables when the model lets the caller choose the file format.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    output_format_field: ClassVar[str | None] = None
    default_output_format: ClassVar[str | None] = None

    @classmethod
    def cross_field_problems(cls, data: Mapping[str, Any]) -> list[Problem]:
        """Rules spanning several fields, checked on the raw payload.

        They run even when single fields are invalid, so that one error message lists every
        problem at once (pydantic's own after-validators would be skipped in that case).
        """
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _report_every_problem(cls, data: Any, handler: Any) -> Any:
        problems = cls.cross_field_problems(data) if isinstance(data, Mapping) else []
        extra: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError("cross_field", p.message),
                "loc": (p.field,),
                "input": p.value,
            }
            for p in problems
        ]
        try:
            result = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            raise ValidationError.from_exception_data(cls.__name__, [*_as_line_errors(exc), *extra]) from None
        if extra:
            raise ValidationError.from_exception_data(cls.__name__, extra)
        return result


def _as_line_errors(exc: ValidationError) -> list[InitErrorDetails]:
    """Re-wrap pydantic's errors so they can be raised again together with ours."""
    out: list[InitErrorDetails] = []
    for err in exc.errors():
        detail: InitErrorDetails = {
            "type": PydanticCustomError(err["type"], err["msg"]),
            "loc": tuple(err["loc"]),
            "input": err.get("input"),
        }
        out.append(detail)
    return out
