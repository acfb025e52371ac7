"""Constants and a raw socket server shared by the hook tests (importable: the test dir is on sys.path)."""

from __future__ import annotations

import socket
import threading

KEY = "sk-test-4f9c2a7e1b3d5968aa"
CONN_ID = "segmind_test"


def closed_port() -> int:
    """A loopback port with nothing listening: connecting is refused before anything is sent."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


class RawServer:
    """A tiny socket server replaying scripted raw answers, one per connection.

    ``None`` means: read the request, then close without answering (a reset after send).
    """

    def __init__(self, script: list[bytes | None]) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                conn.settimeout(2)
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                self.requests.append(data)
                answer = self.script.pop(0)
                if answer is not None:
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()
