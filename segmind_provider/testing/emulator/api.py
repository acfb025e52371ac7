"""The model API: v1 sync runs, v2 submit/status/result, the credit balance, and job outputs on
the media host.

Order of checks for a call: faults, key (401), rate limit (429) in the gate; then model (404, or
410 for a retired one: not billed), body and parameters, file inputs included (400), credits (406), work.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .inputs import resolve_sources
from .models import ModelSpec
from .recipes import MEDIA_KINDS, make_recipe
from .render import content_type
from .responses import error, json_response, log_detail, read_object, server_of
from .state import Job, job_status
from .validation import ParamError, validate
from .video import VideoUnavailableError, video_problem

if TYPE_CHECKING:
    from .app import EmulatorServer


def add_routes(app: web.Application, server: EmulatorServer) -> None:
    app.router.add_get("/v1/get-user-credits", server.gate("credits", credits))
    app.router.add_post("/v1/{model}", server.gate("sync", sync_run))
    app.router.add_post("/v2/{model}", server.gate("submit", submit))
    app.router.add_get("/v2/requests/{request_id}/status", server.gate("status", status))
    app.router.add_get("/v2/requests/{request_id}", server.gate("result", result))


async def _accept(request: web.Request) -> tuple[ModelSpec, Job] | web.Response:
    """Parse, check, charge and schedule a job: what v1 and v2 share before they answer differently."""
    server = server_of(request)
    state = server.state
    spec = state.models.get(request.match_info["model"])
    if spec is None:
        return error(404, f"Model not found: {request.match_info['model']}")
    if spec.retired:
        successor = f"; use {spec.successor}" if spec.successor else ""
        return error(410, f"Model {spec.name} has been retired{successor}")
    problem = video_problem() if spec.output == "video" else None
    if problem is not None:  # refused before it is charged, not a 500 when the output is fetched
        return error(400, f"this emulator cannot make {spec.name}'s output: {problem}")
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    try:
        params = validate(spec, body)
        sources = resolve_sources(server, request.url.host, spec, params)
    except ParamError as exc:
        return error(400, str(exc))
    cost = state.cost_of(spec)
    if not state.can_pay(cost):
        return error(406, "Insufficient credits")
    reason = state.blocked_reason(params)
    if reason is None:
        state.pay(cost)
    request_id, seed = state.new_request(params)
    key = request.headers.get("x-api-key") or ""
    job = state.schedule(
        spec,
        params,
        reason,
        request=(request_id, seed),
        recipe=make_recipe(spec, params, seed, sources),
        body=body,
        key_hash=state.key_hash(key),
        cost=0.0 if reason else cost,
    )
    log_detail(request_id=request_id, model=spec.name)
    return spec, job


def urls(server: EmulatorServer, request: web.Request, request_id: str) -> dict[str, str]:
    base = server.api_base(request)
    status_url = f"{base}/v2/requests/{request_id}/status"
    return {"status_url": status_url, "response_url": f"{base}/v2/requests/{request_id}"}


async def output_value(server: EmulatorServer, request: web.Request, job: Job) -> Any:
    """What `output` holds: a media URL for images and videos, the value itself for text and JSON."""
    recipe = job.recipe
    if recipe is None or recipe.kind in MEDIA_KINDS:
        fmt = recipe.fmt if recipe else "webp"
        return f"{server.media_base(request)}/media/{job.request_id}.{fmt}"
    return await server.text_value(recipe)


async def submit(request: web.Request) -> web.StreamResponse:
    accepted = await _accept(request)
    if isinstance(accepted, web.Response):
        return accepted
    server = server_of(request)
    _, job = accepted
    server.state.add_job(job)
    links = urls(server, request, job.request_id)
    shown = server.state.config.live_status or "QUEUED"
    return json_response(
        {"request_id": job.request_id, "status": shown, **links, "poll_url": links["status_url"]}
    )


async def sync_run(request: web.Request) -> web.StreamResponse:
    accepted = await _accept(request)
    if isinstance(accepted, web.Response):
        return accepted
    server = server_of(request)
    state = server.state
    spec, job = accepted
    state.add_job(job, pollable=False)
    state.counters["sync"] += 1
    wait = job.end - state.now()
    if wait > 0:
        await asyncio.sleep(wait)
    if job.error:
        return json_response({"status": "FAILED", "error": job.error}, 422)
    headers = {} if state.credits is None else {"X-remaining-credits": str(state.balance()["credits"])}
    assert job.recipe is not None
    if spec.output in ("text", "json"):
        return json_response(
            {"status": "COMPLETED", "output": await server.text_value(job.recipe)}, headers=headers
        )
    try:
        data = await server.output_bytes(job.recipe)
    except VideoUnavailableError as exc:
        return error(500, str(exc))
    headers["Content-Type"] = content_type(job.recipe.fmt)
    return web.Response(body=data, headers=headers)


async def status(request: web.Request) -> web.StreamResponse:
    return await _job_answer(request, result=False)


async def result(request: web.Request) -> web.StreamResponse:
    return await _job_answer(request, result=True)


async def _job_answer(request: web.Request, *, result: bool) -> web.Response:
    """The status and result bodies share their shape; FAILED is served as 422 on both."""
    server = server_of(request)
    request_id = request.match_info["request_id"]
    job = server.state.get_job(request_id)
    if job is None:
        return error(404, f"Request not found: {request_id}")
    config = server.state.config
    state_name = job_status(job, server.state.now())
    shown = (
        config.live_status if config.live_status and state_name in ("QUEUED", "PROCESSING") else state_name
    )
    body: dict[str, Any] = {"request_id": request_id, "status": shown}
    if result:
        body.update(output=None, metrics={}, error=None)
    else:
        body.update(urls(server, request, request_id), metrics={})
    if state_name in ("COMPLETED", "FAILED"):
        body["metrics"] = {"inference_time": job.inference_time}
    if state_name == "FAILED":
        body["error"] = job.error
        return json_response(body, 422)
    if result and state_name == "COMPLETED":
        if config.null_output_error:  # a 200 COMPLETED whose output is missing, with the reason beside it
            body["error"] = config.null_output_error
        else:
            body["output"] = await output_value(server, request, job)
    return json_response(body)


async def credits(request: web.Request) -> web.StreamResponse:
    return json_response(server_of(request).state.balance())


async def media(request: web.Request) -> web.StreamResponse:
    """A finished job's image, video, audio or 3D file; 404 before completion, after expiry or with the wrong extension."""
    server = server_of(request)
    request_id, _, ext = request.match_info["name"].rpartition(".")
    job = server.state.get_job(request_id)
    recipe = job.recipe if job else None
    if (
        job is None
        or recipe is None
        or recipe.kind not in MEDIA_KINDS
        or recipe.fmt != ext
        or job_status(job, server.state.now()) != "COMPLETED"
    ):
        return error(404, "Not found")
    try:
        data = await server.output_bytes(recipe)
    except (VideoUnavailableError, OSError, ValueError) as exc:
        return error(500, f"the emulator could not render this output: {exc}")
    headers = {"Cache-Control": "public, max-age=3600", "ETag": f'"{request_id}"'}
    return web.Response(body=data, content_type=content_type(ext), headers=headers)
