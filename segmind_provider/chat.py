"""One shape for an LLM's answer, whichever vendor's JSON Segmind passed through.

Segmind's gateway returns each vendor's own chat JSON (as the v2 result's ``output``, often as a
JSON string). This reads it the way the official SDK 1.3's ``chat`` module does, by the answer's
distinctive keys rather than the model's name, into
``{"text": str | None, "usage": {"input_tokens", "output_tokens", "total_tokens"} | None,
"vendor": "openai" | "anthropic" | "gemini" | None}``:

- OpenAI: ``choices[0].message.content`` (a string, or a list of text parts); ``usage.prompt_tokens``,
  ``completion_tokens``, ``total_tokens``.
- Anthropic: the ``text`` blocks of ``content`` joined; ``usage.input_tokens``, ``output_tokens``.
- Gemini: ``candidates[0].content.parts[].text`` joined; ``usageMetadata.promptTokenCount``,
  ``candidatesTokenCount``, ``totalTokenCount``.

A string that is not a JSON object is the text itself (a captioner's answer; vendor None). Any other shape has text None;
the raw answer is always kept unchanged in the result's ``output``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from segmind_provider.catalog import output_kind

__all__ = ["chat_of", "is_text_model", "read_chat"]

#: Per vendor: where its usage block is, and its (input, output, total) token fields.
_USAGE_FIELDS = {
    "openai": ("usage", ("prompt_tokens", "completion_tokens", "total_tokens")),
    "anthropic": ("usage", ("input_tokens", "output_tokens", "total_tokens")),
    "gemini": ("usageMetadata", ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")),
}


def read_chat(output: Any) -> dict[str, Any]:
    """The assistant text, token usage and vendor of a chat answer (see the module's docstring)."""
    answer = output
    if isinstance(output, str):
        try:
            answer = json.loads(output)
        except ValueError:
            return {"text": output, "usage": None, "vendor": None}
    if not isinstance(answer, Mapping):
        return {"text": output if isinstance(output, str) else None, "usage": None, "vendor": None}
    vendor, text = _vendor_text(answer)
    return {"text": text, "usage": _usage(answer, vendor), "vendor": vendor}


def is_text_model(model: str) -> bool:
    """Whether the catalog (a full entry, else the directory) says ``model`` answers text (an LLM, a captioner)."""
    return output_kind(model) == "text"


def chat_of(model: str, output: Any) -> dict[str, Any] | None:
    """A text model's answer read into the shape; None for any other model (its output is media)."""
    return read_chat(output) if is_text_model(model) else None


def _joined(parts: Any, *, typed: tuple[Any, ...] | None) -> str:
    """The ``text`` of the dict parts of a list, joined; ``typed``: the part types that count."""
    if not isinstance(parts, list):
        return ""
    return "".join(
        str(part.get("text") or "")
        for part in parts
        if isinstance(part, Mapping) and (typed is None or part.get("type") in typed)
    )


def _first(items: Any) -> Mapping[str, Any]:
    first = items[0] if isinstance(items, list) and items else None
    return first if isinstance(first, Mapping) else {}


def _vendor_text(answer: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if "choices" in answer:
        content = (_first(answer.get("choices")).get("message") or {}).get("content")
        if isinstance(content, str):
            return "openai", content
        return "openai", _joined(content, typed=(None, "text")) if isinstance(content, list) else None
    if isinstance(answer.get("content"), list):
        return "anthropic", _joined(answer["content"], typed=("text",))
    if "candidates" in answer:
        parts = (_first(answer.get("candidates")).get("content") or {}).get("parts")
        return "gemini", _joined(parts, typed=None) if isinstance(parts, list) else None
    return None, None


def _usage(answer: Mapping[str, Any], vendor: str | None) -> dict[str, int | None] | None:
    if vendor is None:
        return None
    key, names = _USAGE_FIELDS[vendor]
    block = answer.get(key)
    if not isinstance(block, Mapping):
        return None
    counts = [block.get(name) if isinstance(block.get(name), int) else None for name in names]
    given, made, total = counts
    if total is None and given is not None and made is not None:
        total = given + made
    return {"input_tokens": given, "output_tokens": made, "total_tokens": total}
