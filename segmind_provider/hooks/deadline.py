"""A deadline on a whole sync HTTP call, not on each read.

requests' read timeout bounds each socket read: a server that sends a byte a second never trips
it, and a call can last for hours. :class:`CallDeadline` arms a timer for the whole call; when it
fires, it shuts the call's socket down, the blocked read returns, and the call fails with a
:class:`~segmind_provider.exceptions.SegmindTransportError` that says so. The sockets are found
through :class:`DeadlineAdapter`'s connections, which register with the deadline of their thread.
(The async path gets the same bound from aiohttp's ``ClientTimeout(total=...)``.)
"""

from __future__ import annotations

import contextlib
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


def deadline_error(what: str, seconds: float) -> SegmindTransportError:
    """The error of a call that outlived its deadline (it may have reached the server)."""
    return SegmindTransportError(
        f"{what} did not finish within its deadline of {seconds:.1f} s (the server kept sending too "
        f"slowly; the read timeout bounds each read, the deadline the whole call)"
    )


class CallDeadline:
    """The deadline of one call on this thread: ``with CallDeadline(s) as d: ...``; ``d.expired`` after."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.expired = False
        self._started = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> CallDeadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self._arm(self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = self._previous
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
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

    def _arm(self, delay: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(max(0.0, delay), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:
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
