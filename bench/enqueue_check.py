"""What the producer's check at enqueue costs per job (runtime.client.check), without Redis.

Times ``Client._new`` (everything ``queue_job`` does before the Redis round trip: path,
queue and priority checks, params to JSON, the check, producer middleware) with the check
and with ``check=False``, per job, for a function task, a class task and a task this
process cannot import (queued unchecked); then the first job of a path (the import and
resolution, once per client). The Redis side is unchanged: ``bench/throughput.py
--scenarios enqueue`` times whole enqueues.

    python bench/enqueue_check.py            # ~10 s
    python bench/enqueue_check.py --n 200000
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import redis

from runtime.client import Client
from runtime.settings import load_settings

CASES = [("function task", "tasks_example.work.io_wait", {"seconds": 0.01}),
         ("class task", "tasks_example.files.WordCount", {"path": "/etc/hostname"}),
         ("not importable here", "othercodebase.tasks.resize", {"width": 3})]


def _round_us(client: Client, path: str, params: dict[str, object], check: bool, n: int) -> float:
    """One round of ``n`` preparations, microseconds per job."""
    new = client._new
    checked = "spec" in inspect.signature(new).parameters  # runs on a tree without the check too
    t = time.perf_counter()
    if checked:
        spec = client._spec(path, check)  # queue_jobs: once per call
        for _ in range(n):
            new(path, params, "default", 0, None, None, spec)
    else:
        for _ in range(n):
            new(path, params, "default", 0, None, None)  # type: ignore[call-arg]
    return (time.perf_counter() - t) / n * 1e6


def per_job_us(client: Client, path: str, params: dict[str, object], n: int, rounds: int) -> tuple[float, float]:
    """(checked, unchecked): the best of ``rounds`` interleaved rounds each, µs per job
    (the best round is the one least disturbed by the rest of the machine)."""
    on, off = [], []
    for _ in range(rounds):
        on.append(_round_us(client, path, params, True, n))
        off.append(_round_us(client, path, params, False, n))
    return min(on), min(off)


def first_job_ms(path: str) -> float:
    """Resolving a path for its first job on a new client, the module already imported
    (what a producer pays once per path and client), median of 20, ms."""
    from runtime import tasks
    times = []
    for _ in range(20):
        tasks.forget_tasks()
        client = _client()
        if not hasattr(client, "_spec"):
            return float("nan")
        t = time.perf_counter()
        client._spec(path, True)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _client() -> Client:
    # never connects: _new does no Redis call
    conn = redis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    return Client(load_settings({"middleware": ""}, env={}), client=conn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="jobs per round")
    ap.add_argument("--rounds", type=int, default=15, help="rounds per case (the best is kept)")
    args = ap.parse_args()
    client = _client()
    print(f"per job, best of {args.rounds} rounds of {args.n:,} (no middleware, no Redis):")
    print(f"{'case':22} {'checked':>10} {'check=False':>12} {'cost':>8}")
    for name, path, params in CASES:
        on, off = per_job_us(client, path, params, args.n, args.rounds)
        print(f"{name:22} {on:7.2f} µs {off:9.2f} µs {on - off:+6.2f} µs")
    print(f"first job of a path on a new client (resolution; module already imported): "
          f"{first_job_ms(CASES[0][1]):.3f} ms")


if __name__ == "__main__":
    main()
