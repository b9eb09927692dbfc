#!/usr/bin/env python3
"""A local OTLP/HTTP receiver for benchmarks (tests/otlp_receiver.py), run until SIGTERM.

Prints its URL on the first line; on SIGTERM prints how many spans arrived and exits.

    python bench/otlp_sink.py > /tmp/otlp.url &
"""

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from otlp_receiver import Receiver  # noqa: E402


def main() -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with Receiver() as rx:
        print(rx.url, flush=True)
        done.wait()
        print(f"spans received: {len(rx.spans)}", flush=True)


if __name__ == "__main__":
    main()
