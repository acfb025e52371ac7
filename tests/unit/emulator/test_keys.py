"""The API key is never stored, logged, echoed or sent to the media host."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import httpx

from segmind_provider.testing.emulator import SegmindEmulator

SECRET = "sk-live-9f8e7d6c5b4a-DO-NOT-LEAK"
OTHER_SECRET = "sk-configured-0a1b2c3d-SECRET"


def _walk(obj: Any, seen: set[int], out: list[str], depth: int = 0) -> None:
    """Collect every string reachable from an object (attributes, containers), to search for the key."""
    if id(obj) in seen or depth > 12:
        return
    seen.add(id(obj))
    if isinstance(obj, (str, bytes)):
        out.append(obj if isinstance(obj, str) else obj.decode("latin-1"))
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(k, seen, out, depth + 1)
            _walk(v, seen, out, depth + 1)
        return
    if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        for item in obj:
            _walk(item, seen, out, depth + 1)
        return
    attrs = getattr(obj, "__dict__", None)
    if attrs is not None:
        _walk(attrs, seen, out, depth + 1)
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            _walk(getattr(obj, slot), seen, out, depth + 1)


def strings_in(*objects: Any) -> str:
    out: list[str] = []
    seen: set[int] = set()
    for obj in objects:
        _walk(obj, seen, out)
    return "\n".join(out)


def test_key_is_never_stored_or_echoed(http: httpx.Client) -> None:
    with SegmindEmulator(time_scale=0.001, api_keys=[OTHER_SECRET, SECRET], rate_limit=6) as emu:
        h = {"x-api-key": SECRET}
        base = emu.base_url
        answers: list[httpx.Response] = []
        submitted = http.post(
            f"{base}/v2/flux-1.1-pro", json={"prompt": "p", "output_format": "jpg"}, headers=h
        )
        answers.append(submitted)
        body = submitted.json()
        emu.advance(60)
        answers.append(http.get(body["status_url"], headers=h))
        result = http.get(body["response_url"], headers=h)
        answers.append(result)
        answers.append(http.get(result.json()["output"]))
        answers.append(http.get(f"{base}/v1/get-user-credits", headers=h))
        answers.append(http.post(f"{base}/v2/flux-1.1-pro", json={"prompt": ""}, headers=h))
        answers.append(
            http.post(f"{base}/v2/flux-1.1-pro", json={"prompt": "p"}, headers={"x-api-key": SECRET + "x"})
        )
        emu.add_fault("status", status=500, count=1)
        answers.append(http.get(body["status_url"], headers=h))
        answers += [http.get(f"{base}/v1/get-user-credits", headers=h) for _ in range(3)]
        assert answers[-1].status_code == 429

        admin = [emu.calls(), emu.config(), emu.stats(), emu.faults(), emu.health()]
        haystack = "\n".join(
            [r.text for r in answers if r.headers.get("content-type", "").startswith("application/json")]
            + [json.dumps(dict(r.headers)) for r in answers]
            + [json.dumps(a) for a in admin]
        )
        assert answers[3].status_code == 200
        assert all(c["key_present"] is False for c in emu.calls(endpoint="media"))
        assert emu.server is not None
        internal = strings_in(emu, emu.server, emu.server.state)
        for secret in (SECRET, OTHER_SECRET):
            assert secret not in haystack
            assert secret not in internal
            assert secret not in repr(emu.server.state.__dict__)
        assert emu.config()["api_keys_configured"] == 2
    gc.collect()


def test_process_mode_passes_keys_outside_argv(http: httpx.Client) -> None:
    with SegmindEmulator(time_scale=0.01, process=True, api_keys=[SECRET]) as emu:
        assert emu.pid is not None
        cmdline = Path(f"/proc/{emu.pid}/cmdline").read_bytes().decode(errors="replace")
        assert SECRET not in cmdline
        assert SECRET not in strings_in(emu)
        ok = http.get(f"{emu.base_url}/v1/get-user-credits", headers={"x-api-key": SECRET})
        bad = http.get(f"{emu.base_url}/v1/get-user-credits", headers={"x-api-key": "other"})
        assert (ok.status_code, bad.status_code) == (200, 401)
