"""The IO scenario's ceiling on this machine: no queue at all, only the task body.

peerbench's scenario c runs 2,000 jobs that each sleep 10 ms and then INCR a Redis key,
50 at a time in one process: ideal 5,000 jobs/s. This script runs the same bodies with
no queue: 50 gevent greenlets (monkey-patched, as in a runtime worker, with runtime's
``greenpoll``) take the 2,000 bodies from a list, and the rate is timed as peerbench
times it (first body start to last body end). What a gevent worker can reach here is at
most this; the gap between it and 100 % is the machine's cost of a greenlet switch, a
timer and a redis-py round trip, which no queue removes.

    python bench/io_floor.py                       # redis-server of its own (free port)
    python bench/io_floor.py --redis redis://127.0.0.1:6399/0 --reps 5

Prints one line per rep and the median, as jobs/s and % of the ideal.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime import greenpoll  # noqa: E402


def run_once(r: redis.Redis, n: int, concurrency: int, sleep_s: float, key: str) -> float:
    r.delete(key)
    todo = list(range(n))
    starts: list[float] = []
    ends: list[float] = []

    def body() -> None:
        while todo:
            todo.pop()
            starts.append(time.time())
            time.sleep(sleep_s)
            r.incr(key)
            ends.append(time.time())

    gevent.joinall([gevent.spawn(body) for _ in range(concurrency)])
    assert int(r.get(key)) == n
    r.delete(key)
    return (n - 1) / (max(ends) - min(starts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--redis", help="redis:// URL (default: start a redis-server on a free port)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--sleep-ms", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    greenpoll.install()
    server = None
    url = args.redis
    if url is None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tmp = tempfile.mkdtemp(prefix="io-floor-")
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
    try:
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        ideal = args.concurrency / (args.sleep_ms / 1000)
        rates = []
        for i in range(args.reps):
            rate = run_once(r, args.n, args.concurrency, args.sleep_ms / 1000, f"io-floor:{i}")
            rates.append(rate)
            print(f"rep {i + 1}: {rate:,.0f} jobs/s = {rate / ideal:.0%} of {ideal:,.0f}")
        med = statistics.median(rates)
        print(f"median: {med:,.0f} jobs/s = {med / ideal:.0%} of the ideal "
              f"({args.n} bodies of sleep {args.sleep_ms:g} ms + INCR, {args.concurrency} greenlets, no queue)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
