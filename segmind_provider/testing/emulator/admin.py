"""Admin endpoints under `/_emulator` on the API port: no key, not logged, not rate limited.

Runtime options, faults, the call log, the requests made (bodies as sent), models, the
clock, expiry and reset, for tests and benchmarks to steer the emulator over plain HTTP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from .account import iso, model_status
from .context import Addresses, Outputs
from .faults import FaultRule
from .models import ModelSpec
from .responses import error, json_response
from .state import EmulatorState

_TIMING = ("latency", "jitter", "cost", "cold_start", "cold_after")


@dataclass(frozen=True)
class Control:
    """What the admin endpoints steer: the whole state, the render cache, the addresses."""

    state: EmulatorState
    outputs: Outputs
    addresses: Addresses


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text='{"error":"body must be JSON"}', content_type="application/json"
        ) from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text='{"error":"body must be a JSON object"}', content_type="application/json"
        )
    return data


async def health(ctl: Control, request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True, **ctl.addresses.as_dict(), "time_scale": ctl.state.config.time_scale})


async def config(ctl: Control, request: web.Request) -> web.StreamResponse:
    return json_response(ctl.state.public_config())


async def set_config(ctl: Control, request: web.Request) -> web.StreamResponse:
    state = ctl.state
    try:
        state.update_config(await _body(request))
    except (TypeError, ValueError) as exc:
        return error(400, str(exc))
    return json_response(state.public_config())


async def faults(ctl: Control, request: web.Request) -> web.StreamResponse:
    return json_response([rule.to_dict() for rule in ctl.state.faults.rules])


async def add_fault(ctl: Control, request: web.Request) -> web.StreamResponse:
    try:
        rule = ctl.state.faults.add(FaultRule.from_dict(await _body(request)))
    except (TypeError, ValueError) as exc:
        return error(400, str(exc))
    return json_response(rule.to_dict())


async def clear_faults(ctl: Control, request: web.Request) -> web.StreamResponse:
    ctl.state.faults.clear()
    return json_response({"ok": True})


async def remove_fault(ctl: Control, request: web.Request) -> web.StreamResponse:
    try:
        removed = ctl.state.faults.remove(int(request.match_info["fault_id"]))
    except ValueError:
        removed = False
    return json_response({"ok": removed}, 200 if removed else 404)


async def calls(ctl: Control, request: web.Request) -> web.StreamResponse:
    found = list(ctl.state.calls)
    endpoint = request.query.get("endpoint")
    if endpoint:
        found = [c for c in found if c["endpoint"] == endpoint]
    since = request.query.get("since")
    if since:
        if not since.isdigit():
            return error(400, "since: must be a call sequence number")
        found = [c for c in found if c["seq"] > int(since)]
    return json_response(found)


async def clear_calls(ctl: Control, request: web.Request) -> web.StreamResponse:
    ctl.state.calls.clear()
    return json_response({"ok": True})


async def requests(ctl: Control, request: web.Request) -> web.StreamResponse:
    """Every request accepted (any key), oldest first, with its body exactly as sent (JSON)."""
    state = ctl.state
    model = request.query.get("model")
    now = state.clock.now()
    return json_response(
        [
            {
                "request_id": job.request_id,
                "model": job.model,
                "status": model_status(job, now),
                "body": job.body,
                "cost": job.cost,
                "created_at": iso(job.wall_created),
            }
            for job in state.jobs.history.values()
            if not model or job.model == model
        ]
    )


async def reset(ctl: Control, request: web.Request) -> web.StreamResponse:
    ctl.state.reset()
    ctl.outputs.cache.clear()
    return json_response({"ok": True})


async def register_model(ctl: Control, request: web.Request) -> web.StreamResponse:
    """Serve a new model, or change a served one's timing, price or retirement (its catalog data is kept)."""
    state = ctl.state
    data = await _body(request)
    try:
        name = str(data["name"])
        changes = {k: float(data[k]) for k in _TIMING if data.get(k) is not None}
        flags: dict[str, Any] = {}
        if data.get("retired") is not None:
            flags["retired"] = bool(data["retired"])
        if data.get("successor") is not None:
            flags["successor"] = str(data["successor"])
        current = state.models.get(name)
        if current is not None:
            if data.get("output") is not None:
                changes["output"] = str(data["output"])  # type: ignore[assignment]
            spec = dataclasses.replace(current, **changes, **flags)  # type: ignore[arg-type]
        else:
            changes.setdefault("latency", 5.0)
            spec = ModelSpec(name=name, output=str(data.get("output") or "image"), **changes, **flags)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        return error(400, f"invalid model: {exc}")
    state.models[spec.name] = spec
    return json_response(spec.to_dict())


async def advance(ctl: Control, request: web.Request) -> web.StreamResponse:
    state = ctl.state
    data = await _body(request)
    try:
        state.clock.advance(float(data.get("seconds", 0)))
    except (TypeError, ValueError) as exc:
        return error(400, str(exc))
    return json_response({"ok": True, "clock_offset": state.clock.offset})


async def expire(ctl: Control, request: web.Request) -> web.StreamResponse:
    data = await _body(request)
    return json_response({"expired": ctl.state.jobs.expire(data.get("request_id"))})


async def stats(ctl: Control, request: web.Request) -> web.StreamResponse:
    state, cache = ctl.state, ctl.outputs.cache
    return json_response(
        {
            "jobs": len(state.jobs.live),
            "by_status": state.jobs.status_counts(),
            "history": len(state.jobs.history),
            "calls_logged": len(state.calls),
            "calls_total": state.calls.seq,
            "renders": cache.renders,
            "cache_hits": cache.hits,
            "cache_items": len(cache),
            "spent": round(state.credits.spent, 6),
            **state.jobs.counters,
            "uploads": state.assets.uploads,
        }
    )


def add_routes(app: web.Application, ctl: Control, prefix: str) -> None:
    routes = (
        ("GET", "/health", health),
        ("GET", "/config", config),
        ("PATCH", "/config", set_config),
        ("POST", "/config", set_config),
        ("GET", "/faults", faults),
        ("POST", "/faults", add_fault),
        ("DELETE", "/faults", clear_faults),
        ("DELETE", "/faults/{fault_id}", remove_fault),
        ("GET", "/calls", calls),
        ("DELETE", "/calls", clear_calls),
        ("GET", "/requests", requests),
        ("POST", "/reset", reset),
        ("POST", "/models", register_model),
        ("POST", "/advance", advance),
        ("POST", "/expire", expire),
        ("GET", "/stats", stats),
    )
    for method, path, handler in routes:
        app.router.add_route(method, prefix + path, partial(handler, ctl))
