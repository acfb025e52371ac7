"""One status poll through SegmindHook vs a bare requests.Session GET, same server, same run, interleaved.

The hook adds: cached connection settings, the request budget (a no-op with no limit configured),
the retry wrapper (tenacity only after a failure), status mapping and JSON parsing. The bare call
does the same GET with the key header, a status check and ``.json()``.

Run:  /work/venv/bin/python bench/hook_overhead.py [--rounds 40 --per-round 100]
Target: ratio (hook / bare, median per-call time) <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import BENCH_KEY, bench_server

BODY = json.dumps({"request_id": "req-1", "status": "PROCESSING", "status_url": "x", "metrics": {}}).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
KEY = BENCH_KEY


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        # One write for head and body: two small writes would meet Nagle + delayed ACK (40 ms stalls).
        self.wfile.write(RESPONSE)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(port: int) -> None:
    """Keep-alive JSON server, run in its own process so it does not share the client's GIL."""
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    with bench_server(__file__) as base:
        import requests

        from segmind_provider.hooks.segmind import SegmindHook

        hook = SegmindHook("segmind_bench")
        session = requests.Session()
        url = f"{base}/v2/requests/req-1/status"

        def bare() -> None:
            response = session.get(url, headers={"x-api-key": KEY}, timeout=(10, 30), allow_redirects=False)
            response.raise_for_status()
            response.json()

        def through_hook() -> None:
            hook.get_status("req-1")

        for _ in range(200):  # warm up both (connections, connection lookup, imports)
            bare()
            through_hook()

        per_call: dict[str, list[float]] = {"bare": [], "hook": []}
        for round_no in range(args.rounds):
            order = [("bare", bare), ("hook", through_hook)]
            if round_no % 2:
                order.reverse()
            for name, fn in order:
                start = time.perf_counter()
                for _ in range(args.per_round):
                    fn()
                per_call[name].append((time.perf_counter() - start) / args.per_round)

        bare_med = statistics.median(per_call["bare"])
        hook_med = statistics.median(per_call["hook"])
        calls = args.rounds * args.per_round
        print(
            f"command: {sys.executable} bench/hook_overhead.py --rounds {args.rounds} --per-round {args.per_round}"
        )
        print(f"calls per side: {calls} (interleaved in {args.rounds} rounds, alternating order)")
        print(f"bare requests.Session GET : {bare_med * 1e6:8.1f} us per call (median of rounds)")
        print(f"SegmindHook.get_status    : {hook_med * 1e6:8.1f} us per call (median of rounds)")
        print(f"overhead ratio hook/bare  : {hook_med / bare_med:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
