#!/usr/bin/env python3
"""A local OTLP/HTTP endpoint for benchmarks, run until SIGTERM.

By default it accepts every export request and discards it (counting requests and
bytes), as a collector on another machine would cost the benchmarked host nothing;
``--decode`` uses the tests' receiver (tests/otlp_receiver.py), which decodes every span
in Python on the same CPUs. Prints its URL on the first line; on SIGTERM, what arrived.

    python bench/otlp_sink.py > /tmp/otlp.url &
"""

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


class Discard:
    """Accepts OTLP/HTTP POSTs (traces and metrics) with an empty success reply."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decode", action="store_true", help="decode and keep every span (the tests' receiver)")
    args = ap.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if args.decode:
        from otlp_receiver import Receiver
        with Receiver() as rx:
            print(rx.url, flush=True)
            done.wait()
            print(f"spans received: {len(rx.spans)}", flush=True)
        return
    sink = Discard()
    print(sink.url, flush=True)
    done.wait()
    print(f"requests: {sink.requests}, bytes: {sink.bytes:,}", flush=True)


if __name__ == "__main__":
    main()
