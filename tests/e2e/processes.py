"""Helpers the real-deployment tests share: free ports, waiting on a condition, killing a process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill_tree(pid: int) -> None:
    """SIGKILL a process group and every group its descendants made (Airflow's supervisor puts each
    task process in a group of its own), as losing the machine would."""
    try:
        groups = {os.getpgid(p.pid) for p in psutil.Process(pid).children(recursive=True)}
    except (psutil.Error, ProcessLookupError):
        groups = set()
    for group in (pid, *groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
