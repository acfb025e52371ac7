"""The HTTP side: the Segmind API on one port, the media "CDN" on another, admin under `/_emulator`.

Two aiohttp applications share one runner and one event loop. The API builds
every URL it returns from the request's own Host header, so a client that
reached it as `localhost` is sent back to `localhost`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from .faults import FaultRule, Fired
from .render import RenderCache, content_type, render_key
from .state import EmulatorConfig, EmulatorState, Job, ModelSpec, job_status, retry_after_header
from .validation import ParamError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


# A status no real answer uses: marks a call whose connection was dropped unanswered.
_DROPPED = 599

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _fault_response(rule: FaultRule) -> web.Response:
    if rule.body is not None:
        return web.Response(text=rule.body, status=rule.status, content_type="text/plain")
    reason = _REASONS.get(rule.status, "Error")
    return _error(rule.status, f"Injected fault: {rule.status} {reason}")


class EmulatorServer:
    """Owns the state and both applications; `start()` binds, `stop()` releases everything."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        api_keys: Iterable[str] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule] = (),
    ) -> None:
        config = config or EmulatorConfig()
        self.state = EmulatorState(config, api_keys=api_keys, models=models, faults=faults)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segmind-emulator-render")
        self.cache = RenderCache(int(config.render_cache_mb * 1024 * 1024), self._executor)
        self.media_port = 0
        self.port = 0
        self.host = "127.0.0.1"
        self._api_runner: web.AppRunner | None = None
        self._media_runner: web.AppRunner | None = None

    # -- wiring ----------------------------------------------------------------------
    def build_api_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/v1/get-user-credits", self._api("credits", self.credits))
        app.router.add_post("/v1/{model}", self._api("sync", self.sync_run))
        app.router.add_post("/v2/{model}", self._api("submit", self.submit))
        app.router.add_get("/v2/requests/{request_id}/status", self._api("status", self.status))
        app.router.add_get("/v2/requests/{request_id}", self._api("result", self.result))
        admin = "/_emulator"
        app.router.add_get(admin + "/health", self.admin_health)
        app.router.add_get(admin + "/config", self.admin_config)
        app.router.add_route("PATCH", admin + "/config", self.admin_set_config)
        app.router.add_post(admin + "/config", self.admin_set_config)
        app.router.add_get(admin + "/faults", self.admin_faults)
        app.router.add_post(admin + "/faults", self.admin_add_fault)
        app.router.add_delete(admin + "/faults", self.admin_clear_faults)
        app.router.add_delete(admin + "/faults/{fault_id}", self.admin_remove_fault)
        app.router.add_get(admin + "/calls", self.admin_calls)
        app.router.add_delete(admin + "/calls", self.admin_clear_calls)
        app.router.add_post(admin + "/reset", self.admin_reset)
        app.router.add_post(admin + "/models", self.admin_register_model)
        app.router.add_post(admin + "/advance", self.admin_advance)
        app.router.add_post(admin + "/expire", self.admin_expire)
        app.router.add_get(admin + "/stats", self.admin_stats)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def build_media_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media/{name}", self._wrap("media", self.media, auth=False))
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        media_port: int = 0,
        *,
        reuse_address: bool = True,
    ) -> None:
        """Bind both ports (0 = any free port) on one runner and start serving."""
        self.host = host
        api_app = self.build_api_app()
        media_app = self.build_media_app()
        # Two applications (API, media), one runner each, all on this one event loop.
        # A short shutdown timeout: stopping must not wait for a handler sleeping in a delay fault.
        opts: dict[str, Any] = {"access_log": None, "handle_signals": False, "shutdown_timeout": 0.5}
        self._api_runner = web.AppRunner(api_app, **opts)
        self._media_runner = web.AppRunner(media_app, **opts)
        await self._api_runner.setup()
        await self._media_runner.setup()
        api_sock = _bind(host, port, reuse_address)
        media_sock = _bind(host, media_port, reuse_address)
        self.port = api_sock.getsockname()[1]
        self.media_port = media_sock.getsockname()[1]
        await web.SockSite(self._api_runner, api_sock).start()
        await web.SockSite(self._media_runner, media_sock).start()

    async def stop(self) -> None:
        runners = [r for r in (self._api_runner, self._media_runner) if r is not None]
        await asyncio.gather(*(r.cleanup() for r in runners))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def base_url(self) -> str:
        return f"http://{_host_for_url(self.client_host)}:{self.port}"

    @property
    def media_url(self) -> str:
        return f"http://{_host_for_url(self.client_host)}:{self.media_port}"

    # -- the gate every API call passes ----------------------------------------------
    def _api(self, endpoint: str, handler: Handler) -> Handler:
        return self._wrap(endpoint, handler, auth=True)

    def _wrap(self, endpoint: str, handler: Handler, *, auth: bool) -> Handler:
        """Log, inject faults, then check key and rate limit (API only), then run the handler."""
        state = self.state

        async def gate(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("x-api-key")
            key_present = bool(key)
            status = 0
            try:
                fired = state.faults.roll(endpoint)
                response = await self._gated(request, handler, fired, key if auth else None, auth)
                status = 0 if response.status == _DROPPED else response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                state.record(request.method, request.path, endpoint, status, key_present)

        return gate

    async def _gated(
        self, request: web.Request, handler: Handler, fired: Fired | None, key: str | None, auth: bool
    ) -> web.StreamResponse:
        state = self.state
        if fired is not None:
            if fired.delay_before:
                await asyncio.sleep(fired.delay_before)
            if fired.before is not None:
                return self._apply(request, fired.before)
        if auth:
            if not key:
                return _error(401, "Unauthorized: missing x-api-key header")
            if not state.key_accepted(key):
                return _error(401, "Unauthorized: invalid API key")
            wait = state.rate_limited(key)
            if wait is not None:
                return _error(
                    429,
                    "Rate limit exceeded, retry later",
                    headers={"Retry-After": retry_after_header(wait)},
                )
        response = await handler(request)
        if fired is not None:
            if fired.delay_after:
                await asyncio.sleep(fired.delay_after)
            if fired.after is not None:
                return self._apply(request, fired.after)
        return response

    def _apply(self, request: web.Request, rule: FaultRule) -> web.Response:
        if rule.kind == "drop":
            transport = request.transport
            if transport is not None:
                transport.abort()
            # aiohttp discards a response whose transport is gone; nothing reaches the client.
            return web.Response(status=_DROPPED)
        return _fault_response(rule)

    # -- URLs ------------------------------------------------------------------------
    def _api_base(self, request: web.Request) -> str:
        return self.state.config.public_url or f"{request.scheme}://{request.host}"

    def _media_base(self, request: web.Request) -> str:
        if self.state.config.media_public_url:
            return self.state.config.media_public_url
        hostname = request.url.host or self.client_host
        return f"http://{_host_for_url(hostname)}:{self.media_port}"

    def _urls(self, request: web.Request, request_id: str) -> dict[str, str]:
        base = self._api_base(request)
        status_url = f"{base}/v2/requests/{request_id}/status"
        return {"status_url": status_url, "response_url": f"{base}/v2/requests/{request_id}"}

    def _output(self, request: web.Request, job: Job) -> Any:
        spec = self.state.models.get(job.model)
        kind = spec.output if spec else "image"
        if kind == "text":
            return f"Emulated {job.model} output for: {job.params.get('prompt', '')}"
        if kind == "json":
            return {"text": f"Emulated {job.model} output", "seed": job.seed}
        ext = job.params["output_format"]
        return f"{self._media_base(request)}/media/{job.request_id}.{ext}"

    # -- API handlers ----------------------------------------------------------------
    async def _parse(self, request: web.Request) -> tuple[ModelSpec, dict[str, Any]] | web.Response:
        model = self.state.models.get(request.match_info["model"])
        if model is None:
            return _error(404, f"Model not found: {request.match_info['model']}")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Request body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object")
        try:
            params = model.validator(body)
        except ParamError as exc:
            return _error(400, str(exc))
        return model, params

    async def _accept(self, request: web.Request) -> tuple[ModelSpec, Job] | web.Response:
        """Parse, charge and schedule a job: what v1 and v2 share before they answer differently."""
        parsed = await self._parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        model, params = parsed
        state = self.state
        cost = state.cost_of(model)
        if not state.can_pay(cost):
            return _error(406, "Insufficient credits")
        error = state.blocked_reason(params)
        if error is None:
            state.pay(cost)
        return model, state.schedule(model, params, error)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request)
        if isinstance(accepted, web.Response):
            return accepted
        _, job = accepted
        self.state.add_job(job)
        urls = self._urls(request, job.request_id)
        return _json(
            {"request_id": job.request_id, "status": "QUEUED", **urls, "poll_url": urls["status_url"]}
        )

    async def sync_run(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request)
        if isinstance(accepted, web.Response):
            return accepted
        model, job = accepted
        state = self.state
        state.counters["sync"] += 1
        wait = job.end - state.now()
        if wait > 0:
            await asyncio.sleep(wait)
        if job.error:
            return _json({"status": "FAILED", "error": job.error}, 422)
        headers = {} if state.credits is None else {"X-remaining-credits": str(state.balance()["credits"])}
        if model.output != "image":
            return _json({"status": "COMPLETED", "output": self._output(request, job)}, headers=headers)
        data = await self.cache.get(render_key(job.model, job.params, job.seed))
        headers["Content-Type"] = content_type(job.params["output_format"])
        return web.Response(body=data, headers=headers)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return self._job_answer(request, result=False)

    async def result(self, request: web.Request) -> web.StreamResponse:
        return self._job_answer(request, result=True)

    def _job_answer(self, request: web.Request, *, result: bool) -> web.Response:
        """The status and result bodies share their shape; FAILED is served as 422 on both."""
        request_id = request.match_info["request_id"]
        job = self.state.get_job(request_id)
        if job is None:
            return _error(404, f"Request not found: {request_id}")
        state_name = job_status(job, self.state.now())
        body: dict[str, Any] = {"request_id": request_id, "status": state_name}
        if result:
            body.update(output=None, metrics={}, error=None)
        else:
            body.update(self._urls(request, request_id), metrics={})
        if state_name in ("COMPLETED", "FAILED"):
            body["metrics"] = {"inference_time": job.inference_time}
        if state_name == "FAILED":
            body["error"] = job.error
            return _json(body, 422)
        if result and state_name == "COMPLETED":
            body["output"] = self._output(request, job)
        return _json(body)

    async def credits(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.balance())

    async def media(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        request_id, _, ext = name.rpartition(".")
        job = self.state.get_job(request_id)
        if (
            job is None
            or job_status(job, self.state.now()) != "COMPLETED"
            or "output_format" not in job.params
            or job.params["output_format"] != ext
        ):
            return _error(404, "Not found")
        data = await self.cache.get(render_key(job.model, job.params, job.seed))
        return web.Response(
            body=data,
            headers={
                "Content-Type": content_type(ext),
                "Cache-Control": "public, max-age=3600",
                "ETag": f'"{request_id}"',
            },
        )

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(404, "Not found")

    # -- admin -----------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=_dumps({"error": "body must be JSON"}), content_type="application/json"
            ) from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(
                text=_dumps({"error": "body must be a JSON object"}), content_type="application/json"
            )
        return data

    async def admin_health(self, request: web.Request) -> web.StreamResponse:
        return _json({"ok": True, "base_url": self.base_url, "media_url": self.media_url})

    async def admin_config(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.public_config())

    async def admin_set_config(self, request: web.Request) -> web.StreamResponse:
        try:
            self.state.update_config(await self._body(request))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json(self.state.public_config())

    async def admin_faults(self, request: web.Request) -> web.StreamResponse:
        return _json([rule.to_dict() for rule in self.state.faults.rules])

    async def admin_add_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            rule = self.state.faults.add(FaultRule.from_dict(await self._body(request)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json(rule.to_dict())

    async def admin_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.state.faults.clear()
        return _json({"ok": True})

    async def admin_remove_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            removed = self.state.faults.remove(int(request.match_info["fault_id"]))
        except ValueError:
            removed = False
        return _json({"ok": removed}, 200 if removed else 404)

    async def admin_calls(self, request: web.Request) -> web.StreamResponse:
        calls = list(self.state.calls)
        endpoint = request.query.get("endpoint")
        if endpoint:
            calls = [c for c in calls if c["endpoint"] == endpoint]
        since = request.query.get("since")
        if since:
            if not since.isdigit():
                return _error(400, "since: must be a call sequence number")
            calls = [c for c in calls if c["seq"] > int(since)]
        return _json(calls)

    async def admin_clear_calls(self, request: web.Request) -> web.StreamResponse:
        self.state.calls.clear()
        return _json({"ok": True})

    async def admin_reset(self, request: web.Request) -> web.StreamResponse:
        self.state.reset()
        self.cache.clear()
        return _json({"ok": True})

    async def admin_register_model(self, request: web.Request) -> web.StreamResponse:
        data = await self._body(request)
        try:
            spec = ModelSpec(
                name=str(data["name"]),
                latency=float(data.get("latency", 5.0)),
                jitter=float(data.get("jitter", 0.15)),
                output=str(data.get("output", "image")),
                cost=None if data.get("cost") is None else float(data["cost"]),
                cold_start=float(data.get("cold_start", 0.0)),
                cold_after=float(data.get("cold_after", 600.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"invalid model: {exc}")
        self.state.models[spec.name] = spec
        return _json(spec.to_dict())

    async def admin_advance(self, request: web.Request) -> web.StreamResponse:
        data = await self._body(request)
        try:
            self.state.advance(float(data.get("seconds", 0)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json({"ok": True, "clock_offset": self.state.clock_offset})

    async def admin_expire(self, request: web.Request) -> web.StreamResponse:
        data = await self._body(request)
        return _json({"expired": self.state.expire(data.get("request_id"))})

    async def admin_stats(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        return _json(
            {
                "jobs": len(state.jobs),
                "by_status": state.status_counts(),
                "calls_logged": len(state.calls),
                "calls_total": state.call_seq,
                "renders": self.cache.renders,
                "cache_hits": self.cache.hits,
                "cache_items": len(self.cache),
                "spent": round(state.spent, 6),
                **state.counters,
            }
        )


def _bind(host: str, port: int, reuse_address: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
