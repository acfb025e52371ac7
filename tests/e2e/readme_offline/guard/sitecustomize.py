"""Loaded by every Python process of the README's offline run (``PYTHONPATH``): any attempt to
resolve a name or open a connection off loopback is written down and refused.

It sits under the clients (``socket.getaddrinfo`` and ``socket.socket.connect``), so it catches the
ones that ignore ``HTTP(S)_PROXY`` too (the hook's aiohttp client does: ``trust_env=False``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

RECORD = os.environ["SEGMIND_OUTBOUND_RECORD"]
_resolve = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_OWN_NAME = socket.gethostname()


def _local(host: Any) -> bool:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name in ("", "localhost", "None", _OWN_NAME):  # Airflow asks for this machine's own name
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback or name in ("0.0.0.0", "::")
    except ValueError:
        return False


def _refuse(what: str) -> None:
    with open(RECORD, "a") as record:
        record.write(f"{os.getpid()} {what}\n")


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _local(host):
        _refuse(f"resolve {host}")
        raise socket.gaierror(socket.EAI_NONAME, f"outbound blocked by the test: {host}")
    return _resolve(host, *args, **kwargs)


def _checked(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse(f"connect {address[0]}:{address[1]}")
        raise ConnectionRefusedError(f"outbound blocked by the test: {address[0]}")


def connect(self: socket.socket, address: Any) -> None:
    _checked(self, address)
    _connect(self, address)


def connect_ex(self: socket.socket, address: Any) -> int:
    _checked(self, address)
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
