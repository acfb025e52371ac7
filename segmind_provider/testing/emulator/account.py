"""Segmind's account API: a key's own request history and the model list, as the official SDK 1.3 reads them.

`GET {account_url}/inference-request/request-history` (paginated under `data`) and
`GET {account_url}/inference-request/request-history/{request_id}`. In-flight requests are
listed as PENDING; `request_body` is a Python literal of the inputs as sent (as in the SDK's
own tests, "{'prompt': 'fox'}"); `credits_deduction` is what the request was charged (0 for a
blocked one, which the emulator does not charge).

`GET {account_url}/inference-model-information/list` lists every served model (the directory's
and the catalog's): slug, title, type (the directory's category), output kind, average cost and
latency, and whether it is retired.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from .context import Context
from .gate import Gate
from .jobs import Job, job_status
from .recipes import MEDIA_KINDS
from .responses import error, json_response
from .validation import ParamError

STATUSES = ("COMPLETED", "FAILED", "PENDING")
SORT_FIELDS = ("model_created", "model_name", "credits_deduction")
MAX_WINDOW_DAYS = 31
DEFAULT_WINDOW_DAYS = 7


def add_routes(app: web.Application, ctx: Context, gate: Gate, prefix: str) -> None:
    path = prefix + "/inference-request/request-history"
    app.router.add_get(path, gate("history", partial(history, ctx)))
    app.router.add_get(path + "/{request_id}", gate("history_item", partial(history_item, ctx)))
    models_path = prefix + "/inference-model-information/list"
    app.router.add_get(models_path, gate("model_list", partial(model_list, ctx)))


def iso(epoch: float) -> str:
    """UTC, milliseconds, `Z`: `2026-05-01T12:00:00.123Z`."""
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def model_status(job: Job, now: float) -> str:
    status = job_status(job, now)
    return "PENDING" if status in ("QUEUED", "PROCESSING") else status


def history_row(job: Job, now: float, media_base: str) -> dict[str, Any]:
    """One request as the account API lists it."""
    status = model_status(job, now)
    done = status != "PENDING"
    recipe = job.recipe
    file_url = None
    if status == "COMPLETED" and recipe is not None and recipe.kind in MEDIA_KINDS:
        file_url = f"{media_base}/media/{job.request_id}.{recipe.fmt}"
    updated = job.end if done else (job.start if now >= job.start else job.created)
    return {
        "request_id": job.request_id,
        "model_name": job.model,
        "model_status": status,
        "credits_deduction": job.cost,
        "request_body": repr(job.body),
        "generation_url": file_url,
        "latency_ms": round(job.inference_time * 1000) if done else None,
        "created_at": iso(job.wall(job.created)),
        "updated_at": iso(job.wall(updated)),
        "error": job.error if status == "FAILED" else None,
    }


@dataclass(frozen=True)
class HistoryQuery:
    page: int
    per_page: int
    first_day: dt.date
    last_day: dt.date
    model_name: str | None
    status: str | None
    sort_by: str
    descending: bool


def _int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) < lo or (hi is not None and int(raw) > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ParamError(f"{name}: must be an integer {bounds}, got {raw!r}")
    return int(raw)


def _day(query: Mapping[str, str], name: str, default: dt.date) -> dt.date:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ParamError(f"{name}: must be a date YYYY-MM-DD, got {raw!r}") from None


def parse_query(query: Mapping[str, str], today: dt.date) -> HistoryQuery:
    """The list's filters, each checked with an error naming it; the window is 31 days at most."""
    last = _day(query, "to_date", today)
    first = _day(query, "from_date", last - dt.timedelta(days=DEFAULT_WINDOW_DAYS))
    if first > last:
        raise ParamError("from_date: must not be after to_date")
    if (last - first).days > MAX_WINDOW_DAYS:
        raise ParamError(f"from_date: the window may span at most {MAX_WINDOW_DAYS} days")
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise ParamError(f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
    sort_by = query.get("sort_by", "model_created")
    if sort_by not in SORT_FIELDS:
        raise ParamError(f"sort_by: must be one of {', '.join(SORT_FIELDS)}, got {sort_by!r}")
    order = query.get("sort_order", "desc")
    if order not in ("asc", "desc"):
        raise ParamError(f"sort_order: must be asc or desc, got {order!r}")
    return HistoryQuery(
        page=_int(query, "page", 1, 1, None),
        per_page=_int(query, "per_page", 20, 1, 100),
        first_day=first,
        last_day=last,
        model_name=query.get("model_name") or None,
        status=status,
        sort_by=sort_by,
        descending=order == "desc",
    )


def _midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


_SORT_KEYS: dict[str, Callable[[Job], tuple[Any, ...]]] = {
    "model_created": lambda job: (job.wall_created, job.request_id),
    "model_name": lambda job: (job.model, job.wall_created),
    "credits_deduction": lambda job: (job.cost, job.wall_created),
}


def select(
    jobs: Iterable[Job], now: float, media_base: str, q: HistoryQuery, page_cap: int | None = None
) -> dict[str, Any]:
    """Filter, sort and cut one page; rows are built only for the page (history can be long).

    ``page_cap`` serves shorter pages than asked, and the answer's paging fields say so.
    """
    per_page = min(q.per_page, page_cap) if page_cap else q.per_page
    lo, hi = _midnight(q.first_day), _midnight(q.last_day + dt.timedelta(days=1))
    name = (q.model_name or "").lower()
    kept = [
        job
        for job in jobs
        if lo <= job.wall_created < hi
        and name in job.model.lower()
        and (q.status is None or model_status(job, now) == q.status)
    ]
    kept.sort(key=_SORT_KEYS[q.sort_by], reverse=q.descending)
    start = (q.page - 1) * per_page
    return {
        "data": [history_row(job, now, media_base) for job in kept[start : start + per_page]],
        "page": q.page,
        "per_page": per_page,
        "total": len(kept),
        "total_pages": math.ceil(len(kept) / per_page),
    }


def _key_hash(ctx: Context, request: web.Request) -> str:
    """The calling key's hash (the gate has checked the key is there and accepted)."""
    return ctx.keys.hash(request.headers.get("x-api-key") or "")


async def history(ctx: Context, request: web.Request) -> web.StreamResponse:
    today = dt.datetime.fromtimestamp(ctx.clock.wall_now(), dt.timezone.utc).date()
    try:
        query = parse_query(request.query, today)
    except ParamError as exc:
        return error(400, str(exc))
    mine = _key_hash(ctx, request)
    own = (job for job in ctx.jobs.history.values() if job.key_hash == mine)
    media_base = ctx.addresses.media_base(request)
    return json_response(select(own, ctx.clock.now(), media_base, query, ctx.config.history_page_cap))


async def history_item(ctx: Context, request: web.Request) -> web.StreamResponse:
    """One of the key's own requests, of any age; another key's request is not found."""
    request_id = request.match_info["request_id"]
    job = ctx.jobs.history.get(request_id)
    if job is None or job.key_hash != _key_hash(ctx, request):
        return error(404, f"Request not found: {request_id}")
    return json_response(history_row(job, ctx.clock.now(), ctx.addresses.media_base(request)))


async def model_list(ctx: Context, request: web.Request) -> web.StreamResponse:
    """Every served model, sorted by slug (the SDK's ``models.list()``)."""
    models = ctx.models
    return json_response([models[name].list_entry() for name in sorted(models)])
