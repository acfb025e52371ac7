"""Runs inside a private network namespace (loopback only): the README's offline block, verbatim,
under bash, behind a loopback proxy that records and refuses every request, with ``guard/`` (the
socket guard) loaded in every Python process. Writes what happened to a JSON file.

Usage: ``unshare -n python runner.py CONFIG.json`` (root); see ``tests/e2e/test_readme_offline.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from segmind_provider.testing.emulator.control import EmulatorControl

EMULATOR = "http://127.0.0.1:8765"  # the README's --port
#: Outbound attempts that must be caught, each by a different catcher: urllib goes through the
#: proxy (it honours HTTPS_PROXY); a bare socket meets the guard.
CONTROLS = (
    "import urllib.request; urllib.request.urlopen('https://api.segmind.com/', timeout=5)",
    "import socket; socket.create_connection(('workflows-api.segmind.com', 443), timeout=5)",
)


class RefusingProxy(socketserver.ThreadingTCPServer):
    """An HTTP(S) proxy that writes down each request line (``CONNECT host:443``...) and answers 403."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: RefusingProxy

    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        if line:
            self.server.seen.append(line)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def run(config: dict[str, Any]) -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    proxy = RefusingProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    env = {
        **config["env"],
        **{name: proxy_url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    guard_record = Path(env["SEGMIND_OUTBOUND_RECORD"])
    controls = []
    for code in CONTROLS:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        controls.append(done.returncode)
    caught = {"proxy": list(proxy.seen), "guard": guard_record.read_text().splitlines()}
    proxy.seen.clear()
    guard_record.write_text("")
    with open(config["log"], "w") as log:
        shell = subprocess.Popen(
            ["bash", "-c", config["block"]],
            env=env,
            cwd=config["cwd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the block's background emulator is in this group: killed below
        )
        try:
            returncode = shell.wait(timeout=config["timeout"])
            calls = EmulatorControl(EMULATOR).calls()
        finally:
            os.killpg(shell.pid, signal.SIGTERM)
    return {
        "returncode": returncode,
        "controls": controls,
        "controls_caught": caught,
        "proxy": proxy.seen,
        "guard": guard_record.read_text().splitlines(),
        "calls": calls,
    }


if __name__ == "__main__":
    config_path = Path(sys.argv[1])
    config = json.loads(config_path.read_text())
    Path(config["result"]).write_text(json.dumps(run(config)))
