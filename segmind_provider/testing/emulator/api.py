"""The model API: v1 sync runs, v2 submit/status/result, the credit balance, and job outputs on
the media host.

Order of checks for a call: faults, key (401), rate limit (429) in the gate; then model (404, or
410 for a retired one: not billed), body and parameters, file inputs included (400), credits (406), work.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from aiohttp import web

from .context import Context
from .gate import Gate
from .inputs import resolve_sources
from .jobs import Job, job_status
from .models import ModelSpec
from .recipes import MEDIA_KINDS, make_recipe
from .render import content_type
from .responses import error, json_response, log_detail, read_object
from .validation import ParamError, validate
from .video import VideoUnavailableError, video_problem


def add_routes(app: web.Application, ctx: Context, gate: Gate) -> None:
    app.router.add_get("/v1/get-user-credits", gate("credits", partial(credits, ctx)))
    app.router.add_post("/v1/{model}", gate("sync", partial(sync_run, ctx)))
    app.router.add_post("/v2/{model}", gate("submit", partial(submit, ctx)))
    app.router.add_get("/v2/requests/{request_id}/status", gate("status", partial(status, ctx)))
    app.router.add_get("/v2/requests/{request_id}", gate("result", partial(result, ctx)))


def add_media_routes(app: web.Application, ctx: Context, gate: Gate) -> None:
    app.router.add_get("/media/{name}", gate("media", partial(media, ctx), auth=False))


async def _accept(ctx: Context, request: web.Request) -> tuple[ModelSpec, Job] | web.Response:
    """Parse, check, charge and schedule a job: what v1 and v2 share before they answer differently."""
    spec = ctx.models.get(request.match_info["model"])
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
        sources = resolve_sources(ctx, request.url.host, spec, params)
    except ParamError as exc:
        return error(400, str(exc))
    cost = ctx.credits.cost_of(spec)
    if not ctx.credits.can_pay(cost):
        return error(406, "Insufficient credits")
    reason = ctx.jobs.blocked_reason(params)
    if reason is None:
        ctx.credits.pay(cost)
    request_id, seed = ctx.jobs.new_request(params)
    key = request.headers.get("x-api-key") or ""
    job = ctx.jobs.schedule(
        spec,
        params,
        reason,
        request=(request_id, seed),
        recipe=make_recipe(spec, params, seed, sources),
        body=body,
        key_hash=ctx.keys.hash(key),
        cost=0.0 if reason else cost,
    )
    log_detail(request_id=request_id, model=spec.name)
    return spec, job


def urls(ctx: Context, request: web.Request, request_id: str) -> dict[str, str]:
    base = ctx.addresses.api_base(request)
    status_url = f"{base}/v2/requests/{request_id}/status"
    return {"status_url": status_url, "response_url": f"{base}/v2/requests/{request_id}"}


async def output_value(ctx: Context, request: web.Request, job: Job) -> Any:
    """What `output` holds: a media URL for images and videos, the value itself for text and JSON."""
    recipe = job.recipe
    if recipe is None or recipe.kind in MEDIA_KINDS:
        fmt = recipe.fmt if recipe else "webp"
        return f"{ctx.addresses.media_base(request)}/media/{job.request_id}.{fmt}"
    return await ctx.outputs.text(recipe)


async def submit(ctx: Context, request: web.Request) -> web.StreamResponse:
    accepted = await _accept(ctx, request)
    if isinstance(accepted, web.Response):
        return accepted
    _, job = accepted
    ctx.jobs.add(job)
    links = urls(ctx, request, job.request_id)
    shown = ctx.config.live_status or "QUEUED"
    return json_response(
        {"request_id": job.request_id, "status": shown, **links, "poll_url": links["status_url"]}
    )


async def sync_run(ctx: Context, request: web.Request) -> web.StreamResponse:
    accepted = await _accept(ctx, request)
    if isinstance(accepted, web.Response):
        return accepted
    spec, job = accepted
    ctx.jobs.add(job, pollable=False)
    ctx.jobs.counters["sync"] += 1
    wait = job.end - ctx.clock.now()
    if wait > 0:
        await asyncio.sleep(wait)
    if job.error:
        return json_response({"status": "FAILED", "error": job.error}, 422)
    credits = ctx.credits
    headers = {} if credits.remaining is None else {"X-remaining-credits": str(credits.balance()["credits"])}
    assert job.recipe is not None
    if spec.output in ("text", "json"):
        return json_response(
            {"status": "COMPLETED", "output": await ctx.outputs.text(job.recipe)}, headers=headers
        )
    try:
        data = await ctx.outputs.media(job.recipe)
    except VideoUnavailableError as exc:
        return error(500, str(exc))
    headers["Content-Type"] = content_type(job.recipe.fmt)
    return web.Response(body=data, headers=headers)


async def status(ctx: Context, request: web.Request) -> web.StreamResponse:
    return await _job_answer(ctx, request, result=False)


async def result(ctx: Context, request: web.Request) -> web.StreamResponse:
    return await _job_answer(ctx, request, result=True)


async def _job_answer(ctx: Context, request: web.Request, *, result: bool) -> web.Response:
    """The status and result bodies share their shape; FAILED is served as 422 on both."""
    request_id = request.match_info["request_id"]
    job = ctx.jobs.get(request_id)
    if job is None:
        return error(404, f"Request not found: {request_id}")
    config = ctx.config
    state_name = job_status(job, ctx.clock.now())
    shown = (
        config.live_status if config.live_status and state_name in ("QUEUED", "PROCESSING") else state_name
    )
    body: dict[str, Any] = {"request_id": request_id, "status": shown}
    if result:
        body.update(output=None, metrics={}, error=None)
    else:
        body.update(urls(ctx, request, request_id), metrics={})
    if state_name in ("COMPLETED", "FAILED"):
        body["metrics"] = {"inference_time": job.inference_time}
    if state_name == "FAILED":
        body["error"] = job.error
        return json_response(body, 422)
    if result and state_name == "COMPLETED":
        if config.null_output_error:  # a 200 COMPLETED whose output is missing, with the reason beside it
            body["error"] = config.null_output_error
        else:
            body["output"] = await output_value(ctx, request, job)
    return json_response(body)


async def credits(ctx: Context, request: web.Request) -> web.StreamResponse:
    return json_response(ctx.credits.balance())


async def media(ctx: Context, request: web.Request) -> web.StreamResponse:
    """A finished job's image, video, audio or 3D file; 404 before completion, after expiry or with the wrong extension."""
    request_id, _, ext = request.match_info["name"].rpartition(".")
    job = ctx.jobs.get(request_id)
    recipe = job.recipe if job else None
    if (
        job is None
        or recipe is None
        or recipe.kind not in MEDIA_KINDS
        or recipe.fmt != ext
        or job_status(job, ctx.clock.now()) != "COMPLETED"
    ):
        return error(404, "Not found")
    try:
        data = await ctx.outputs.media(recipe)
    except (VideoUnavailableError, OSError, ValueError) as exc:
        return error(500, f"the emulator could not render this output: {exc}")
    headers = {"Cache-Control": "public, max-age=3600", "ETag": f'"{request_id}"'}
    return web.Response(body=data, content_type=content_type(ext), headers=headers)
