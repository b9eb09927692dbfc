"""Tasks of bench/throughput.py (the worker is started with --tasks tasks_example,bench.rt_tasks)."""

import time

from runtime import task


def stamp() -> float:
    """The worker's clock when the task body starts (cross-checks the job's started_at)."""
    return time.time()


def progress_noop() -> None:
    """A no-op that reports progress once (the 'progress on' cost)."""
    from runtime import set_progress
    set_progress(1.0, "done")


def lag_probe(seconds: float = 3.0, step_s: float = 0.001) -> dict:
    """Sleeps step_s in a loop for `seconds` and returns how late each wake-up was (ms):
    the stall that other work in the worker (exports, jobs) imposes on a running greenlet."""
    late = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        time.sleep(step_s)
        late.append((time.perf_counter() - t - step_s) * 1000)
    late.sort()
    return {"n": len(late), "p50_ms": late[len(late) // 2], "p99_ms": late[int(len(late) * 0.99)], "max_ms": late[-1],
            "top5_ms": [round(x, 1) for x in late[-5:]]}


_ballast: list = []


def ballast(mb: int = 200) -> int:
    """Holds about `mb` MB of Python objects in this worker (once)."""
    if not _ballast:
        _ballast.extend({"i": i, "s": "x" * 100} for i in range(mb * 1024 * 1024 // 330))
    import psutil
    return psutil.Process().memory_info().rss


def allocate(n: int = 20000) -> int:
    """Allocation-heavy work: builds and keeps nothing."""
    return len([{"i": i, "v": [i, i]} for i in range(n)])


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def cpu_200ms() -> int:
    """About 200-250 ms of pure-Python CPU on this machine (recursive calls: many frames)."""
    return _fib(32)


_r = None


def incr_noop() -> None:
    """A no-op that INCRs a Redis counter, as peerbench's tasks do (mark_done)."""
    global _r
    if _r is None:
        import os

        import redis
        _r = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0"))
    _r.incr("bench:incr_noop")


def span_burst(seconds: float = 3.0) -> int:
    """Makes OpenTelemetry spans (5 attributes each, like a job's) for ``seconds``, yielding
    to the hub after each: keeps the span exporter busy while costing other greenlets
    almost nothing itself (measures export stalls with lag_probe beside it)."""
    import gevent
    from opentelemetry import trace
    tracer = trace.get_tracer("bench")
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        with tracer.start_as_current_span("burst", attributes={"a": 1, "b": "x" * 20, "c": n, "d": 1.5, "e": True}):
            n += 1
        gevent.sleep(0)
    return n


def progress_bar(n: int = 20_000) -> int:
    """Redraws a tqdm-style progress bar ``n`` times (``\\r``, no newline until the end)."""
    for i in range(n):
        print(f"\r{i + 1}/{n} [{'#' * (20 * (i + 1) // n):<20}]", end="")
    print()
    return n


def pb_noop() -> None:
    """peerbench's runtime-obs job: progress reported once, then an INCR (mark_done)."""
    from runtime import set_progress
    set_progress(1.0, "done")
    incr_noop()


@task(max_concurrency=50)
def noop_cap50() -> None:
    """A no-op under a concurrency cap of 50 across all workers (runtime.caps)."""


@task(keep="none")
def noop_keep_none() -> None:
    """A no-op whose document Redis deletes once it succeeds (task option keep='none')."""


@task(keep="compact")
def noop_keep_compact() -> None:
    """A no-op of which Redis keeps only the status, times, params and result (keep='compact')."""


_ledger = None


def ledger_noop() -> None:
    """A no-op that appends its job id to list ``runs`` of the ledger Redis
    (BENCH_LEDGER_URL, bench/cluster.py): runs are counted on a server apart from the
    one under test, whose CPU they would add to and whose failover may lose its last writes."""
    global _ledger
    if _ledger is None:
        import os

        import redis
        _ledger = redis.Redis.from_url(os.environ["BENCH_LEDGER_URL"])
    from runtime.context import current_job
    ctx = current_job.get()
    _ledger.rpush("runs", ctx.job_id if ctx else "?")
