"""Helpers for the emulator's tests: the catalog read as data, input files, a run to completion."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Protocol

import httpx
from PIL import Image, ImageDraw

import segmind_provider
from segmind_provider.testing.emulator import SegmindEmulator

KEY = "emulator-test-key"


class Upload(Protocol):
    def __call__(self, data: bytes, content_type: str = ...) -> str: ...


CATALOG_DIR = Path(segmind_provider.__file__).parent / "catalog" / "models"


def catalog_entries() -> dict[str, dict[str, Any]]:
    """Every catalog entry, by slug, straight from the JSON files."""
    entries = (json.loads(path.read_text()) for path in sorted(CATALOG_DIR.glob("*.json")))
    return {entry["slug"]: entry for entry in entries}


def entry_for(task: str) -> dict[str, Any]:
    """The (first) catalog entry of a task that runs on its files and prompt alone (it requires fields,
    and every one takes a file, or is the prompt), so tests follow the catalog rather than a slug."""
    found = [
        e
        for e in catalog_entries().values()
        if e["task"] == task
        and any(p.get("required") for p in e["parameters"].values())
        and all(
            p.get("media") or name == "prompt" for name, p in e["parameters"].items() if p.get("required")
        )
    ]
    assert found, f"no catalog model for task {task!r}"
    return found[0]


def media_fields(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: p for name, p in entry["parameters"].items() if p.get("media")}


def product_png(size: tuple[int, int] = (400, 300)) -> bytes:
    """A studio-style product shot: a red box on a light grey backdrop."""
    img = Image.new("RGB", size, (235, 235, 235))
    w, h = size
    ImageDraw.Draw(img).rectangle((w * 3 // 8, h // 3, w * 5 // 8, h * 2 // 3), fill=(200, 30, 30))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def file_value(param: dict[str, Any], data: bytes, upload: Upload) -> str:
    """A file field's value the way the entry says the model takes it (URL or base64)."""
    return upload(data) if param.get("encoding", "url") == "url" else base64.b64encode(data).decode()


def valid_payload(entry: dict[str, Any], upload: Upload, image: bytes | None = None) -> dict[str, Any]:
    """The smallest valid payload for an entry: its required fields, files filled in."""
    payload: dict[str, Any] = {}
    for name, param in entry["parameters"].items():
        if not param.get("required"):
            continue
        if param.get("media"):
            payload[name] = file_value(param, image or product_png(), upload)
        elif "enum" in param:
            payload[name] = param["enum"][0]
        elif param["type"] == "array":  # a chat model's messages, else a list of one text
            payload[name] = (
                [{"role": "user", "content": "a red box"}] if name == "messages" else ["a red box"]
            )
        else:
            payload[name] = {"string": "a red box", "integer": 1, "number": 1.0, "boolean": True}[
                param["type"]
            ]
    return payload


def run_to_completion(
    http: httpx.Client, emu: SegmindEmulator, model: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Submit, move the clock past the model's time, return the result body."""
    submitted = http.post(f"{emu.base_url}/v2/{model}", json=payload, headers={"x-api-key": KEY})
    assert submitted.status_code == 200, submitted.text
    emu.advance(emu.config()["models"][model]["latency"] * emu.config()["time_scale"] * 1.2 + 1)
    result = http.get(submitted.json()["response_url"], headers={"x-api-key": KEY})
    assert result.status_code == 200, result.text
    return result.json()  # type: ignore[no-any-return]
