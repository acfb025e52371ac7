"""PixelFlow workflows: ``POST /workflows/{id}`` runs a chain of the emulator's own models, and the
returned ``poll_url`` (``GET /workflows/request/{request_id}``) answers its status and, once
COMPLETED, its ``output`` as a JSON string (as Segmind's workflow pages show).

A workflow is data: named inputs (a default, or None for a required one), steps (a model and its
parameters, where a string ``"{name}"`` is an input's value or an earlier step's output URL), and an
optional ``fail`` reason that ends every run FAILED at its last step. Each step is a real job of the
emulator (billed, rendered, served from the media host, listed in the history), started when the
previous one ends. The output holds each step's output under the step's name and ``steps``, their
count. ``DEFAULT_WORKFLOW`` is served from the start: flux-1.1-pro, then background removal.
Register others with ``POST /_emulator/workflows`` (``EmulatorControl.register_workflow``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from .api import output_value
from .context import Context
from .gate import Gate
from .jobs import Job
from .recipes import Source, make_recipe
from .recipes import output_format as format_of
from .responses import error, json_response, log_detail, read_object
from .validation import ParamError, validate

__all__ = ["DEFAULT_WORKFLOW", "WorkflowSpec", "add_routes"]

_REF = re.compile(r"^\{([A-Za-z0-9_.-]+)\}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow as the emulator serves it (see the module docstring)."""

    workflow_id: str
    inputs: dict[str, Any]
    steps: tuple[tuple[str, str, dict[str, Any]], ...]  # (name, model, params)
    fail: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowSpec:
        """Read a registration body; a ValueError names what is wrong."""
        workflow_id = str(data.get("workflow_id") or "")
        if not _ID.match(workflow_id):
            raise ValueError("workflow_id: letters, digits, '_', '-' and '.' only (1-128)")
        inputs = data.get("inputs", DEFAULT_INPUTS)
        steps = data.get("steps", DEFAULT_STEPS)
        if not isinstance(inputs, dict) or not isinstance(steps, list) or not steps:
            raise ValueError("inputs must be an object and steps a non-empty list")
        parsed = []
        for step in steps:
            if not isinstance(step, dict) or not step.get("name") or not step.get("model"):
                raise ValueError("each step needs a name, a model and params")
            parsed.append((str(step["name"]), str(step["model"]), dict(step.get("params") or {})))
        fail = data.get("fail")
        return cls(workflow_id, dict(inputs), tuple(parsed), str(fail) if fail else None)


DEFAULT_INPUTS: dict[str, Any] = {"prompt": None, "seed": 7}
DEFAULT_STEPS = [
    {
        "name": "image",
        "model": "flux-1.1-pro",
        "params": {"prompt": "{prompt}", "seed": "{seed}", "output_format": "png"},
    },
    {"name": "cutout", "model": "bg-removal-v2", "params": {"image": "{image}"}},
]
DEFAULT_WORKFLOW = WorkflowSpec.from_dict({"workflow_id": "emulator-product-cutout-v1"})


@dataclass
class WorkflowRun:
    request_id: str
    workflow_id: str
    steps: list[tuple[str, Job]]
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkflowBook:
    """The registered workflows and their runs, with the context their steps run in."""

    ctx: Context
    specs: dict[str, WorkflowSpec]
    runs: dict[str, WorkflowRun] = field(default_factory=dict)


def add_routes(app: web.Application, ctx: Context, gate: Gate, admin_prefix: str) -> None:
    book = WorkflowBook(ctx, {DEFAULT_WORKFLOW.workflow_id: DEFAULT_WORKFLOW})
    app.router.add_post("/workflows/{workflow_id}", gate("workflow", partial(submit, book)))
    app.router.add_get("/workflows/request/{request_id}", gate("workflow_poll", partial(poll, book)))
    app.router.add_post(admin_prefix + "/workflows", partial(register, book))


async def register(book: WorkflowBook, request: web.Request) -> web.StreamResponse:
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    try:
        spec = WorkflowSpec.from_dict(body)
    except ValueError as exc:
        return error(400, str(exc))
    unknown = [model for _, model, _ in spec.steps if model not in book.ctx.models]
    if unknown:
        return error(400, f"steps: unknown model(s) {', '.join(unknown)}")
    book.specs[spec.workflow_id] = spec
    return json_response({"workflow_id": spec.workflow_id, "steps": [name for name, _, _ in spec.steps]})


def _inputs(spec: WorkflowSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(spec.inputs))
    missing = sorted(name for name, default in spec.inputs.items() if default is None and name not in body)
    if unknown or missing:
        problems = [f"unknown input(s) {', '.join(unknown)}"] if unknown else []
        problems += [f"missing required input(s) {', '.join(missing)}"] if missing else []
        raise ParamError(f"{'; '.join(problems)}; this workflow takes {', '.join(sorted(spec.inputs))}")
    return {**{k: v for k, v in spec.inputs.items() if v is not None}, **body}


async def submit(book: WorkflowBook, request: web.Request) -> web.StreamResponse:
    """Check the inputs (400), the credits for every step (406), then schedule the chain of jobs."""
    ctx = book.ctx
    spec = book.specs.get(request.match_info["workflow_id"])
    if spec is None:
        return error(404, f"Workflow not found: {request.match_info['workflow_id']}")
    body = await read_object(request)
    if isinstance(body, web.Response):
        return body
    try:
        values = _inputs(spec, body)
        planned = _plan(ctx, request, spec, values)
    except ParamError as exc:
        return error(400, str(exc))
    credits, jobs = ctx.credits, ctx.jobs
    cost = sum(credits.cost_of(ctx.models[model]) for _, model, _ in spec.steps)
    if not credits.can_pay(cost):
        return error(406, "Insufficient credits")
    request_id, _ = jobs.new_request({})
    run = WorkflowRun(request_id, spec.workflow_id, [])
    key_hash = ctx.keys.hash(request.headers.get("x-api-key") or "")
    previous: Job | None = None
    for index, (name, model, params, from_previous) in enumerate(planned):
        step_spec = ctx.models[model]
        reason = jobs.blocked_reason(params)
        if reason is None and spec.fail and index == len(planned) - 1:
            reason = spec.fail
        step_cost = 0.0 if reason else credits.cost_of(step_spec)
        credits.pay(step_cost)
        step_request = jobs.new_request(params)
        sources: dict[str, list[Source]] = {}
        if previous is not None and previous.recipe is not None:  # the chain: the previous step's output
            sources = {key: [previous.recipe] for key in from_previous}
        job = jobs.schedule(
            step_spec,
            params,
            reason,
            request=step_request,
            recipe=make_recipe(step_spec, params, step_request[1], sources),
            body=params,
            key_hash=key_hash,
            cost=step_cost,
        )
        if previous is not None and job.start < previous.end:
            shift = previous.end - job.start
            job.start += shift
            job.end += shift
        jobs.add(job)
        run.steps.append((name, job))
        previous = job
        if reason:
            break
    book.runs[request_id] = run
    log_detail(request_id=request_id, workflow=spec.workflow_id)
    poll_url = f"{ctx.addresses.api_base(request)}/workflows/request/{request_id}"
    return json_response({"request_id": request_id, "status": "QUEUED", "poll_url": poll_url})


def _plan(
    ctx: Context, request: web.Request, spec: WorkflowSpec, values: Mapping[str, Any]
) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """Each step's name, model, validated parameters and the fields filled with an earlier step's output."""
    planned: list[tuple[str, str, dict[str, Any], list[str]]] = []
    urls: dict[str, str] = {}
    for name, model, template in spec.steps:
        step_spec = ctx.models.get(model)
        if step_spec is None:
            raise ParamError(f"step {name}: model {model} is not served")
        body: dict[str, Any] = {}
        from_steps: list[str] = []
        for key, value in template.items():
            ref = _REF.match(value) if isinstance(value, str) else None
            if ref and ref.group(1) in urls:
                body[key] = urls[ref.group(1)]
                from_steps.append(key)
            elif ref:
                if ref.group(1) in values:
                    body[key] = values[ref.group(1)]
            else:
                body[key] = value
        try:
            params = validate(step_spec, body)
        except ParamError as exc:
            raise ParamError(f"step {name} ({model}): {exc}") from None
        planned.append((name, model, params, from_steps))
        # Where the step's output will be (its job id is not known yet): a URL for the next step's checks.
        urls[name] = (
            f"{ctx.addresses.media_base(request)}/media/{name}-pending.{format_of(step_spec, params)}"
        )
    return planned


def run_status(run: WorkflowRun, now: float) -> tuple[str, str | None]:
    """QUEUED before the first step starts, PROCESSING until the last ends, then COMPLETED or FAILED."""
    first, last = run.steps[0][1], run.steps[-1][1]
    if now < first.start:
        return "QUEUED", None
    if now < last.end:
        return "PROCESSING", None
    name, job = run.steps[-1]
    if job.error:
        return "FAILED", f"step {name} ({job.model}) failed: {job.error}"
    return "COMPLETED", None


async def poll(book: WorkflowBook, request: web.Request) -> web.StreamResponse:
    ctx = book.ctx
    request_id = request.match_info["request_id"]
    run = book.runs.get(request_id)
    if run is None or any(ctx.jobs.get(job.request_id) is None for _, job in run.steps):
        return error(404, f"Request not found: {request_id}")
    status, reason = run_status(run, ctx.clock.now())
    body: dict[str, Any] = {"request_id": request_id, "status": status}
    if status == "FAILED":
        body["error"] = reason
    elif status == "COMPLETED":
        outputs: dict[str, Any] = {}
        for name, job in run.steps:
            outputs[name] = await output_value(ctx, request, job)
        outputs["steps"] = len(run.steps)
        body["output"] = json.dumps(outputs)
    return json_response(body)
