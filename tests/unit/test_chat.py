"""LLM answers in one shape (issue 19 part 3): ``segmind_provider.chat`` alone, then through the real
operator, batch operator and hook against the emulator, which answers in each vendor's own JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from segmind_provider.chat import read_chat
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.batch import SegmindBatchOperator
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator

QUICK: dict[str, Any] = {"expected_duration": 0.05, "poll_interval": 0.2}
ASKED = "Name one “lighthouse” — briefly"


def chat_payload(asked: str = ASKED) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": asked},
        ]
    }


def test_an_openai_answer_reads_into_the_shape() -> None:
    answer = {
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    expected = {
        "text": "Hi",
        "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
        "vendor": "openai",
    }
    assert read_chat(answer) == expected
    assert read_chat(json.dumps(answer)) == expected  # Segmind's v2 output: the JSON as a string


def test_an_anthropic_answer_joins_its_text_blocks_and_adds_up_the_total() -> None:
    answer = {
        "content": [
            {"type": "text", "text": "Hel"},
            {"type": "tool_use", "id": "t"},
            {"type": "text", "text": "lo"},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    assert read_chat(answer) == {
        "text": "Hello",
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
        "vendor": "anthropic",
    }


def test_a_gemini_answer_reads_its_parts_and_usage_metadata() -> None:
    answer = {
        "candidates": [{"content": {"parts": [{"text": "Bon"}, {"text": "jour"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
    }
    assert read_chat(answer) == {
        "text": "Bonjour",
        "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6},
        "vendor": "gemini",
    }


@pytest.mark.parametrize("output", [{"answer": "x"}, [1, 2], None, 3])
def test_an_unknown_shape_has_no_text_no_usage_and_no_vendor(output: Any) -> None:
    assert read_chat(output) == {"text": None, "usage": None, "vendor": None}


@pytest.mark.parametrize("output", ["A red lighthouse.", "42", "[1, 2]"])
def test_a_string_that_is_not_a_json_object_is_the_text_itself(output: str) -> None:
    assert read_chat(output) == {"text": output, "usage": None, "vendor": None}


def test_a_vendor_answer_without_usage_has_usage_none() -> None:
    assert read_chat({"choices": [{"message": {"content": "x"}}]})["usage"] is None


@pytest.mark.parametrize(("model", "vendor"), [("gpt-4o", "openai"), ("claude-4-sonnet", "anthropic")])
def test_the_operator_returns_one_chat_shape_and_stores_the_assistant_text(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, model: str, vendor: str
) -> None:
    result = SegmindOperator(
        task_id="ask",
        model=model,
        payload=chat_payload(),
        output_path=str(tmp_path / "answer"),
        deferrable=False,
        **QUICK,
    ).execute(make_context())
    raw = json.loads(result["output"])  # the vendor's own JSON, kept as Segmind gave it
    assert ("choices" in raw) == (vendor == "openai") and ("content" in raw) == (vendor == "anthropic")
    chat = result["chat"]
    assert chat["vendor"] == vendor
    assert chat["text"] == f"Emulated {model} reply to: {ASKED}"
    usage = chat["usage"]
    assert usage["input_tokens"] == 1 + 1 + len(ASKED.split())
    assert usage["output_tokens"] == len(chat["text"].split())
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert result["output_uris"] == [str(tmp_path / "answer.txt")]
    assert (tmp_path / "answer.txt").read_text(encoding="utf-8") == chat["text"]


def test_hook_generate_returns_the_same_chat_shape(emulator: SegmindEmulator, tmp_path: Path) -> None:
    result = SegmindHook().generate(
        "deepseek-chat", chat_payload("Why?"), timeout=30, output_path=str(tmp_path / "a.md"), **QUICK
    )
    assert result["chat"]["vendor"] == "openai"
    assert result["chat"]["text"] == "Emulated deepseek-chat reply to: Why?"
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == result["chat"]["text"]


def test_an_image_model_has_no_chat_key(emulator: SegmindEmulator, make_context: Any) -> None:
    result = SegmindOperator(
        task_id="img", model="flux-1.1-pro", payload={"prompt": "a cat"}, deferrable=False, **QUICK
    ).execute(make_context())
    assert "chat" not in result


def test_a_batch_of_llm_items_carries_the_chat_shape_in_its_manifest_items(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    result = SegmindBatchOperator(
        task_id="asks",
        model="claude-4-sonnet",
        payloads={"a": chat_payload("First?"), "b": chat_payload("Second?")},
        deferrable=False,
        **QUICK,
    ).execute(make_context())
    items = result["items"]
    assert items["a"]["chat"]["text"] == "Emulated claude-4-sonnet reply to: First?"
    assert items["b"]["chat"]["vendor"] == "anthropic"
    assert items["b"]["chat"]["usage"]["total_tokens"] > 0


def test_a_batch_of_llm_items_with_an_output_dir_stores_each_assistant_text(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    result = SegmindBatchOperator(
        task_id="asks",
        model="gpt-4o",
        payloads={"a": chat_payload("First?"), "b": chat_payload("Second?")},
        output_dir=str(tmp_path / "answers"),
        deferrable=False,
        **QUICK,
    ).execute(make_context())
    assert result["completed"] == 2 and result["failed"] == 0
    assert (tmp_path / "answers" / "a.txt").read_text(encoding="utf-8") == "Emulated gpt-4o reply to: First?"
    assert (tmp_path / "answers" / "b.txt").read_text(encoding="utf-8") == "Emulated gpt-4o reply to: Second?"


def test_a_vendor_answer_without_text_keeps_its_vendor_and_text_none() -> None:
    assert read_chat({"choices": []}) == {"text": None, "usage": None, "vendor": "openai"}
