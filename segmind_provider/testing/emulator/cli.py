"""Command line: `segmind-emulator` / `python -m segmind_provider.testing.emulator`.

Prints one machine-readable line when both ports listen
(`SEGMIND_EMULATOR_READY {"base_url", "media_url", "storage_url", "account_url", "time_scale",
"connection"}`) so a parent process can start it with `--port 0` and learn the ports it got,
and the Airflow connection to use on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .app import EmulatorServer
from .config import EmulatorConfig
from .control import connection_dict
from .faults import FaultRule
from .models import ModelSpec, default_models
from .video import video_problem

READY_PREFIX = "SEGMIND_EMULATOR_READY "
KEYS_ENV = "SEGMIND_EMULATOR_API_KEYS"
# Printed in the connection: any non-empty key works unless keys are configured (never printed).
PRINTED_KEY = "emulator-key"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segmind-emulator",
        description="A local stand-in for Segmind's serverless API (real HTTP, real images, faults on demand).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="API port; 0 picks a free one (default 8765)")
    p.add_argument(
        "--media-port", type=int, default=None, help="media port (default: port+1, or free if port is 0)"
    )
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="multiply simulated latencies (0.01 = 100x faster)"
    )
    p.add_argument("--workers", type=int, default=32, help="jobs processed at once; the rest stay QUEUED")
    p.add_argument(
        "--api-key",
        action="append",
        default=None,
        help=f"accept only these keys (repeatable; prefer the {KEYS_ENV} env var, comma-separated)",
    )
    p.add_argument("--credits", type=float, default=None, help="credit balance (default unlimited)")
    p.add_argument("--free-credits", type=float, default=0.0)
    p.add_argument("--cost-per-image", type=float, default=0.05)
    p.add_argument(
        "--rate-limit", type=int, default=None, help="requests per window per key (default unlimited)"
    )
    p.add_argument(
        "--rate-limit-window", type=float, default=60.0, help="rate-limit window in seconds (default 60)"
    )
    p.add_argument(
        "--block-word", action="append", default=[], help="prompt words that end FAILED (repeatable)"
    )
    p.add_argument(
        "--fail-word",
        action="append",
        default=[],
        help="prompt words that end FAILED with a non-moderation error (repeatable)",
    )
    p.add_argument("--retention", type=float, default=3600.0, help="seconds results are kept (default 3600)")
    p.add_argument(
        "--retention-scaled",
        action="store_true",
        help="multiply the retention by --time-scale too (default: wall-clock seconds)",
    )
    p.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="MODEL=SECONDS",
        help="override a model's mean latency (repeatable)",
    )
    p.add_argument(
        "--cold-start",
        action="append",
        default=[],
        metavar="MODEL=SECONDS",
        help="simulated load time of a model idle for 600 s or never used (repeatable)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SECONDS[:KIND]",
        help="register another model; KIND is image (default), text or json (repeatable)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. endpoint=status,status=502,count=2 or endpoint=result,kind=drop,probability=0.1",
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--public-url", default=None, help="API base URL to put in returned URLs (behind a proxy)")
    p.add_argument("--media-public-url", default=None, help="media base URL to put in outputs")
    p.add_argument("--render-cache-mb", type=float, default=128.0)
    p.add_argument("--call-log-size", type=int, default=10_000)
    p.add_argument("--history-size", type=int, default=100_000, help="requests kept in the account history")
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest file accepted by upload-asset")
    p.add_argument(
        "--catalog-dir", default=None, help="read model entries (*.json) from here instead of the package's"
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def parse_models(
    latency: Sequence[str],
    extra: Sequence[str],
    cold_start: Sequence[str] = (),
    catalog_dir: str | None = None,
) -> dict[str, ModelSpec]:
    models = default_models(catalog_dir)
    for item in extra:
        name, _, rest = item.partition("=")
        seconds, _, kind = rest.partition(":")
        models[name] = ModelSpec(name, latency=float(seconds or 5.0), output=kind or "image")
    for attr, items in (("latency", latency), ("cold_start", cold_start)):
        for item in items:
            name, _, seconds = item.partition("=")
            if name not in models:
                raise ValueError(f"--{attr.replace('_', '-')}: unknown model {name!r}")
            setattr(models[name], attr, float(seconds))
    return models


def server_from_args(args: argparse.Namespace) -> EmulatorServer:
    config = EmulatorConfig(
        time_scale=args.time_scale,
        workers=args.workers,
        credits=args.credits,
        free_credits=args.free_credits,
        cost_per_image=args.cost_per_image,
        rate_limit=args.rate_limit,
        rate_limit_window=args.rate_limit_window,
        blocked_words=[w.lower() for w in args.block_word],
        failing_words=[w.lower() for w in args.fail_word],
        retention=args.retention,
        retention_scaled=args.retention_scaled,
        public_url=args.public_url,
        media_public_url=args.media_public_url,
        call_log_size=args.call_log_size,
        history_size=args.history_size,
        max_upload_mb=args.max_upload_mb,
        catalog_dir=args.catalog_dir,
        render_cache_mb=args.render_cache_mb,
        fault_seed=args.fault_seed,
    )
    keys: list[str] | None = list(args.api_key) if args.api_key else None
    env_keys = os.environ.pop(KEYS_ENV, None)
    if env_keys:
        keys = (keys or []) + [k.strip() for k in env_keys.split(",") if k.strip()]
    models = parse_models(args.latency, args.model, args.cold_start, args.catalog_dir)
    faults = [FaultRule.parse(spec) for spec in args.fault]
    return EmulatorServer(config, api_keys=keys, models=models, faults=faults)


def options_to_argv(options: dict[str, Any]) -> list[str]:
    """Turn `SegmindEmulator(**options)` into CLI flags for a child process (keys travel by env)."""
    argv: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        if name in ("blocked_words", "failing_words"):
            flag = "--block-word" if name == "blocked_words" else "--fail-word"
            for word in value:
                argv += [flag, str(word)]
        elif name == "retention_scaled":
            if value:
                argv.append("--retention-scaled")
        elif name in ("latency", "cold_start"):
            for model, seconds in value.items():
                argv += ["--" + name.replace("_", "-"), f"{model}={seconds}"]
        elif name == "models":
            for model, spec in value.items():
                if isinstance(spec, ModelSpec):
                    argv += ["--model", f"{model}={spec.latency}:{spec.output}"]
                    if spec.cold_start:
                        argv += ["--cold-start", f"{model}={spec.cold_start}"]
                else:
                    argv += ["--model", f"{model}={spec}"]
        elif name == "faults":
            for rule in value:
                data = rule.to_dict() if isinstance(rule, FaultRule) else dict(rule)
                spec = ",".join(
                    f"{k}={v}" for k, v in data.items() if v is not None and k not in ("id", "fired")
                )
                argv += ["--fault", spec]
        else:
            argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


async def _serve(server: EmulatorServer, host: str, port: int, media_port: int) -> None:
    await server.start(host, port, media_port)
    time_scale = server.state.config.time_scale
    key = "<one of the configured keys>" if server.state.keys.configured is not None else PRINTED_KEY
    connection = connection_dict(server.base_url, key, time_scale)
    urls = server.addresses()
    print(READY_PREFIX + json.dumps({**urls, "time_scale": time_scale, "connection": connection}), flush=True)
    print(
        f"segmind-emulator: API {urls['base_url']}  media {urls['media_url']}  storage {urls['storage_url']}  "
        f"account {urls['account_url']}  admin {urls['base_url']}/_emulator/config\n"
        f"export AIRFLOW_CONN_SEGMIND_DEFAULT='{json.dumps(connection)}'",
        file=sys.stderr,
        flush=True,
    )
    problem = video_problem()
    if problem is not None:
        print(f"segmind-emulator: video models' requests are refused (400): {problem}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        server = server_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    media_port = args.media_port
    if media_port is None:
        media_port = 0 if args.port == 0 else args.port + 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server, args.host, args.port, media_port))
    return 0
