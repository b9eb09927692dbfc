"""IO-bound, CPU-bound, progress, flaky and leaky tasks."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from runtime import set_progress, task
from runtime.context import current_job


def noop() -> None:
    """Does nothing (benchmarks)."""


def io_wait(seconds: float = 0.01) -> float:
    """Wait ``seconds`` like a network call does (cooperative under the gevent worker)."""
    time.sleep(seconds)
    return seconds


def read_files(directory: str, pattern: str = "*.py") -> dict[str, Any]:
    """Read every file matching ``pattern`` in ``directory`` and hash it: IO-bound."""
    from pathlib import Path
    h = hashlib.sha256()
    n = size = 0
    for p in sorted(Path(directory).glob(pattern)):
        data = p.read_bytes()
        h.update(data)
        n += 1
        size += len(data)
    return {"files": n, "bytes": size, "sha256": h.hexdigest()}


def count_primes(limit: int = 200_000) -> int:
    """Number of primes below ``limit`` by a plain sieve: CPU-bound, never yields."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, limit, i)))
    return sum(sieve)


def spin(seconds: float = 1.0) -> int:
    """Burn CPU for ``seconds`` without yielding (tests the watchdog and heartbeat)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def steps(n: int = 10, step_s: float = 0.05) -> int:
    """``n`` steps of ``step_s`` seconds, reporting progress after each."""
    for i in range(1, n + 1):
        time.sleep(step_s)
        set_progress(i / n, f"{i}/{n} steps")
    return n


@task(max_retries=3, retry_delay_s=0.2)
def flaky(fail_times: int = 2) -> dict[str, int]:
    """Fails its first ``fail_times`` attempts with ConnectionError, then succeeds (it is
    retried with backoff up to 3 times)."""
    ctx = current_job.get()
    attempt = ctx.attempt if ctx else 1
    if attempt <= fail_times:
        raise ConnectionError(f"upstream not ready (attempt {attempt})")
    return {"attempt": attempt}


_cache: list[Any] = []


def leaky(kilobytes: int = 256) -> int:
    """Leaks on purpose: keeps ``kilobytes`` of dicts per call in a module-level list."""
    _cache.append([{"i": i, "payload": os.urandom(16).hex()} for i in range(kilobytes * 1024 // 200)])
    return len(_cache)


def fail(message: str = "boom") -> None:
    """Always raises ValueError(message)."""
    raise ValueError(message)


def crash() -> None:
    """Kills its own worker process at once (os._exit), as a segfaulting extension would."""
    os._exit(13)
