"""A deadline on a whole sync HTTP call, not on each read.

requests' read timeout bounds each socket read: a server that sends a byte a second never trips
it, and a call can last for hours. :class:`CallDeadline` arms a deadline for the whole call; when it
passes, the call's socket is shut down, the blocked read returns, and the call fails with a
:class:`~segmind_provider.exceptions.SegmindTransportError` that says so. One watchdog thread per
process keeps every armed deadline (a ``threading.Timer`` per call started a thread per HTTP call:
four per image in a batch). The sockets are found
through :class:`DeadlineAdapter`'s connections, which register with the deadline of their thread.
(The async path gets the same bound from aiohttp's ``ClientTimeout(total=...)``.)
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from segmind_provider.exceptions import SegmindTransportError

__all__ = ["CallDeadline", "DeadlineAdapter", "deadline_error"]

_current = threading.local()
_generations = itertools.count(1)
#: The watchdog's heap is cleared of ended calls' entries when it grows past this (then twice the rest).
_COMPACT_AT = 256


def deadline_error(what: str, seconds: float) -> SegmindTransportError:
    """The error of a call that outlived its deadline (it may have reached the server)."""
    return SegmindTransportError(
        f"{what} did not finish within its deadline of {seconds:.1f} s (the server kept sending too "
        f"slowly; the read timeout bounds each read, the deadline the whole call)"
    )


class _Watchdog:
    """The process's one thread that expires armed deadlines, earliest first; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, CallDeadline, int]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._compact_at = _COMPACT_AT

    def arm(self, deadline: CallDeadline, due: float, generation: int) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._order), deadline, generation))
            if len(self._heap) > self._compact_at:  # ended calls' entries wait for their time: drop them
                self._heap = [entry for entry in self._heap if entry[2].armed(entry[3])]
                heapq.heapify(self._heap)
                self._compact_at = max(_COMPACT_AT, 2 * len(self._heap))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="segmind-call-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and not self._heap[0][2].armed(self._heap[0][3]):
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, deadline, generation = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            deadline._expire(generation)

    def _forget_thread(self) -> None:
        """In a forked child the thread is gone (the heap's entries are the parent's calls)."""
        self._cond = threading.Condition()
        self._heap, self._thread, self._compact_at = [], None, _COMPACT_AT


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog._forget_thread)


class CallDeadline:
    """The deadline of one call on this thread: ``with CallDeadline(s) as d: ...``; ``d.expired`` after."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.expired = False
        self._started = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._generation = 0  # the armed deadline's; 0: none armed

    def __enter__(self) -> CallDeadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self._arm(self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = self._previous
        with self._lock:
            self._generation = 0
            self._sockets.clear()

    def shorten(self, left: float) -> None:
        """Bring the deadline forward to ``left`` seconds from now (never later than it was)."""
        elapsed = time.monotonic() - self._started
        if elapsed + left < self.seconds and not self.expired:
            self.seconds = elapsed + max(0.0, left)
            self._arm(left)

    def watch(self, sock: socket.socket | None) -> None:
        """A socket of this call: shut down when the deadline passes."""
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shutdown(sock)
            else:
                self._sockets.append(sock)

    def armed(self, generation: int) -> bool:
        """Whether ``generation`` is still this call's deadline (not moved, not ended)."""
        return generation != 0 and generation == self._generation

    def _arm(self, delay: float) -> None:
        with self._lock:
            self._generation = next(_generations)
            generation = self._generation
        _watchdog.arm(self, time.monotonic() + max(0.0, delay), generation)

    def _expire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # moved or ended meanwhile
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch(sock: Any) -> None:
    deadline: CallDeadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Connection mixin: register the socket with the thread's deadline (new and reused connections)."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a kept-alive connection: connect() is not called again
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _SecurePool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _Pool, "https": _SecurePool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections a :class:`CallDeadline` can cut (proxied ones too)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
