"""`SegmindEmulator`: start the emulator in a background thread or a child process.

Thread mode is the cheapest for tests (no interpreter start); process mode
gives the server its own GIL and core, which benchmarks need so the client
load they measure does not compete with the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import fields
from types import TracebackType
from typing import IO, Any

from .app import EmulatorServer
from .cli import KEYS_ENV, READY_PREFIX, options_to_argv
from .config import EmulatorConfig
from .control import DEFAULT_TEST_KEY, EmulatorControl
from .faults import FaultRule
from .models import ModelSpec, default_models

_CONFIG_FIELDS = {f.name for f in fields(EmulatorConfig)}


class SegmindEmulator(EmulatorControl):
    """A running emulator: `with SegmindEmulator(time_scale=0.01) as emu: emu.base_url`.

    Options are the `EmulatorConfig` fields (time_scale, workers, credits, ...)
    plus `api_keys`, `latency` and `cold_start` ({model: seconds}), `models` ({name: ModelSpec}),
    `faults` (FaultRule or dicts). `process=True` runs it in a child process.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_port: int = 0,
        process: bool = False,
        cpu_affinity: Iterable[int] | None = None,
        api_keys: Iterable[str] | None = None,
        latency: dict[str, float] | None = None,
        cold_start: dict[str, float] | None = None,
        models: dict[str, ModelSpec] | None = None,
        faults: Iterable[FaultRule | dict[str, Any]] = (),
        api_key: str = DEFAULT_TEST_KEY,
        startup_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        unknown = set(options) - _CONFIG_FIELDS
        if unknown:
            raise TypeError(f"unknown emulator option(s): {', '.join(sorted(unknown))}")
        super().__init__("http://unstarted", "", api_key)
        self._host, self._port, self._media_port = host, port, media_port
        self._process_mode = process
        self._cpu_affinity = None if cpu_affinity is None else set(cpu_affinity)
        self._startup_timeout = startup_timeout
        self._options = options
        self._latency = dict(latency or {})
        self._cold_start = dict(cold_start or {})
        self._models = dict(models or {})
        self._faults = [f if isinstance(f, FaultRule) else FaultRule.from_dict(f) for f in faults]
        # Joined into one string and dropped at start: the object keeps no key list around.
        self._pending_keys: str | None = None if api_keys is None else ",".join(api_keys)
        self.server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[str] | None = None

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> SegmindEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SegmindEmulator:
        if self._process_mode:
            self._start_process()
        else:
            self._start_thread()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._stop_process()
        if self._thread is not None:
            self._stop_thread()

    # -- thread mode ---------------------------------------------------------------------
    def _start_thread(self) -> None:
        models = default_models(self._options.get("catalog_dir"))
        models.update(self._models)
        for option, values in (("latency", self._latency), ("cold_start", self._cold_start)):
            for name, seconds in values.items():
                if name not in models:
                    raise ValueError(f"{option}: unknown model {name!r}")
                setattr(models[name], option, float(seconds))
        keys = None if self._pending_keys is None else self._pending_keys.split(",")
        self._pending_keys = None
        server = EmulatorServer(
            EmulatorConfig(**self._options), api_keys=keys, models=models, faults=self._faults
        )
        del keys
        ready: queue.Queue[BaseException | None] = queue.Queue()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start(self._host, self._port, self._media_port))
            except BaseException as exc:
                ready.put(exc)
                loop.close()
                return
            ready.put(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(server.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="segmind-emulator", daemon=True)
        self._thread.start()
        error = ready.get(timeout=self._startup_timeout)
        if error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"segmind emulator failed to start: {error}") from error
        self.server = server
        self.base_url = server.base_url
        self.media_url = server.media_url

    def _stop_thread(self) -> None:
        assert self._thread is not None
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    # -- process mode --------------------------------------------------------------------
    def _start_process(self) -> None:
        options: dict[str, Any] = dict(self._options)
        if self._latency:
            options["latency"] = self._latency
        if self._cold_start:
            options["cold_start"] = self._cold_start
        if self._models:
            options["models"] = self._models
        if self._faults:
            options["faults"] = self._faults
        argv = [
            sys.executable,
            "-m",
            "segmind_provider.testing.emulator",
            "--host",
            self._host,
            "--port",
            str(self._port),
            "--media-port",
            str(self._media_port),
            *options_to_argv(options),
        ]
        env = dict(os.environ)
        env.pop(KEYS_ENV, None)
        if self._pending_keys is not None:
            env[KEYS_ENV] = self._pending_keys
            self._pending_keys = None
        affinity = self._cpu_affinity

        def pin() -> None:
            if affinity and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, affinity)

        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pin if affinity else None
        )
        del env
        line = _read_ready_line(self._proc.stdout, self._startup_timeout)
        if line is None:
            self._stop_process()
            raise RuntimeError("segmind emulator process did not report ready")
        info = json.loads(line[len(READY_PREFIX) :])
        self.base_url = info["base_url"]
        self.media_url = info["media_url"]

    @property
    def pid(self) -> int | None:
        """The child's process id in process mode (e.g. to read its CPU time)."""
        return None if self._proc is None else self._proc.pid

    def _stop_process(self) -> None:
        assert self._proc is not None
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read_ready_line(stream: IO[str] | None, timeout: float) -> str | None:
    """Read stdout until the ready line, with a deadline (a reader thread; works on any OS)."""
    if stream is None:
        return None
    found: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for line in stream:
            if line.startswith(READY_PREFIX):
                found.put(line.strip())
                return
        found.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        return found.get(timeout=timeout)
    except queue.Empty:
        return None
