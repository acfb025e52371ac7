"""A small Python client for the admin endpoints (`/_emulator/...`).

Every runtime change goes over HTTP, so the same methods drive an emulator in a
thread, in a child process, or one started by hand with the CLI.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_TEST_KEY = "emulator-test-key"
STORAGE_PREFIX = "/storage"
ACCOUNT_PREFIX = "/account"


def service_urls(base_url: str) -> dict[str, str]:
    """The storage and account addresses of an emulator whose API is at `base_url` (path prefixes)."""
    return {"storage_url": base_url + STORAGE_PREFIX, "account_url": base_url + ACCOUNT_PREFIX}


def connection_dict(base_url: str, api_key: str, time_scale: float) -> dict[str, Any]:
    """An Airflow connection pointing at an emulator: the API host and the time scale.

    The provider sends storage and account calls to ``{host}/storage`` and ``{host}/account`` for
    any host that is not Segmind's, which is where the emulator serves them (``service_urls``)."""
    return {
        "conn_type": "segmind",
        "host": base_url,
        "password": api_key,
        "extra": {"time_scale": time_scale},
    }


class EmulatorControlError(RuntimeError):
    """An admin call was refused (bad option, unknown fault id, ...)."""


class EmulatorControl:
    """Drive a running emulator: config, faults, call log, clock, reset."""

    def __init__(self, base_url: str, media_url: str = "", api_key: str = DEFAULT_TEST_KEY) -> None:
        self.base_url = base_url.rstrip("/")
        self.media_url = media_url.rstrip("/")
        # A fake key for clients under test; the emulator accepts any non-empty key by default.
        self.api_key = api_key

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + "/_emulator" + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise EmulatorControlError(f"{method} /_emulator{path}: {exc.code} {detail}") from None

    @property
    def storage_url(self) -> str:
        """Where `POST /upload-asset` is served (the connection extra `storage_url`)."""
        return service_urls(self.base_url)["storage_url"]

    @property
    def account_url(self) -> str:
        """Where the request history is served (the connection extra `account_url`)."""
        return service_urls(self.base_url)["account_url"]

    # -- config ----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        """The current options (API keys appear only as a count)."""
        return self._call("GET", "/config")  # type: ignore[no-any-return]

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change runtime options, e.g. `configure(credits=0, rate_limit=5, blocked_words=["x"])`."""
        return self._call("PATCH", "/config", changes)  # type: ignore[no-any-return]

    def register_model(
        self,
        name: str,
        latency: float | None = None,
        *,
        output: str | None = None,
        jitter: float | None = None,
        cost: float | None = None,
        cold_start: float | None = None,
        cold_after: float | None = None,
        retired: bool | None = None,
        successor: str | None = None,
    ) -> dict[str, Any]:
        """Serve a new model (latency 5 s, image output unless given), or change a served one's
        timing, price or output kind (image, video, audio, 3d, text, json); a catalog model keeps
        its parameters. ``retired=True``: the model answers 410 Gone (not billed), naming ``successor``.

        `cold_start` simulated seconds are added (as QUEUED time) before the first job
        after `cold_after` idle seconds, like a cold model loading.
        """
        body = {
            "name": name,
            "latency": latency,
            "output": output,
            "jitter": jitter,
            "cost": cost,
            "cold_start": cold_start,
            "cold_after": cold_after,
            "retired": retired,
            "successor": successor,
        }
        return self._call("POST", "/models", body)  # type: ignore[no-any-return]

    def register_workflow(
        self,
        workflow_id: str,
        *,
        inputs: dict[str, Any] | None = None,
        steps: list[dict[str, Any]] | None = None,
        fail: str | None = None,
    ) -> dict[str, Any]:
        """Serve a PixelFlow workflow at ``POST /workflows/{workflow_id}`` (``emulator.workflows``):
        ``inputs`` {name: default, None = required}, ``steps`` [{name, model, params}] (default: the
        text-to-image then background-removal chain), ``fail`` a reason every run ends FAILED with."""
        body: dict[str, Any] = {"workflow_id": workflow_id, "fail": fail}
        if inputs is not None:
            body["inputs"] = inputs
        if steps is not None:
            body["steps"] = steps
        return self._call("POST", "/workflows", body)  # type: ignore[no-any-return]

    # -- faults ----------------------------------------------------------------------
    def add_fault(
        self,
        endpoint: str = "*",
        *,
        status: int | None = None,
        kind: str | None = None,
        probability: float = 1.0,
        count: int | None = None,
        delay: float = 0.0,
        when: str = "before",
        body: str | None = None,
        rate: float | None = None,
    ) -> int:
        """Inject a fault; returns its id. `kind` defaults to "error" (or "delay" when only `delay` is given).

        Kinds: error, delay, drop, hang (hold the connection `delay` seconds, default an hour, then
        close it unanswered), corrupt (full Content-Length, leading bytes intact, garbage after),
        truncate (full Content-Length, half the body, then close), flip (64 bytes in the middle
        inverted, length and signature intact), drip (the body at `rate` bytes per second, default 1).
        `when="after"` does the work
        first: a submit creates and bills its job, then the answer is lost.
        """
        if kind is None:
            kind = "delay" if status is None and delay else "error"
        rule: dict[str, Any] = {
            "endpoint": endpoint,
            "kind": kind,
            "status": 500 if status is None else status,
            "probability": probability,
            "count": count,
            "delay": delay,
            "when": when,
            "body": body,
        }
        if rate is not None:
            rule["rate"] = rate
        return int(self._call("POST", "/faults", rule)["id"])

    def lose_answer(
        self, endpoint: str = "submit", *, how: str = "drop", count: int | None = 1, hold: float = 0.0
    ) -> int:
        """The call does its work (a submit creates and bills the job), then its answer is lost:
        `how="drop"` closes the connection at once, `how="hang"` holds it open `hold` seconds
        (default an hour: the client's read timeout fires first) and then closes it."""
        if how not in ("drop", "hang"):
            raise ValueError("how: must be 'drop' or 'hang'")
        return self.add_fault(endpoint, kind=how, count=count, delay=hold, when="after")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")  # type: ignore[no-any-return]

    def remove_fault(self, fault_id: int) -> None:
        self._call("DELETE", f"/faults/{fault_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # -- calls, clock, jobs ----------------------------------------------------------
    def calls(self, endpoint: str | None = None, since: int | None = None) -> list[dict[str, Any]]:
        """The call log: method, path, endpoint, status, key_present (never the key)."""
        query = []
        if endpoint:
            query.append(f"endpoint={endpoint}")
        if since is not None:
            query.append(f"since={since}")
        return self._call("GET", "/calls" + ("?" + "&".join(query) if query else ""))  # type: ignore[no-any-return]

    def clear_calls(self) -> None:
        self._call("DELETE", "/calls")

    def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every request the emulator accepted (any key), oldest first: `request_id`, `model`,
        `status` (PENDING, COMPLETED, FAILED), `body` (the JSON as sent), `cost`, `created_at`."""
        return self._call("GET", "/requests" + (f"?model={model}" if model else ""))  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Forget jobs, calls, faults, rate windows; restore the startup options and credits."""
        self._call("POST", "/reset", {})

    def advance(self, seconds: float) -> None:
        """Pretend this many wall-clock seconds passed: jobs finish, results expire, rate windows roll."""
        self._call("POST", "/advance", {"seconds": seconds})

    def expire(self, request_id: str | None = None) -> int:
        """Drop one request (or all): later status/result/media calls get 404."""
        return int(self._call("POST", "/expire", {"request_id": request_id})["expired"])

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")  # type: ignore[no-any-return]

    # -- helpers for clients under test ----------------------------------------------
    def connection_json(self, api_key: str | None = None) -> str:
        """An Airflow connection (JSON form) pointing at this emulator, for `AIRFLOW_CONN_SEGMIND_DEFAULT`:
        the API host and the extra `time_scale` (the emulator's current one)."""
        time_scale = float(self.config()["time_scale"])
        return json.dumps(connection_dict(self.base_url, api_key or self.api_key, time_scale))
