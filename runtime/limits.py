"""Recycling limits of one worker process: memory (soft), jobs run, time alive.

A worker with a limit is checked after every job and, by its native heartbeat thread,
every ``mem_check_interval_s`` (a CPU-bound job holds the gevent hub, so a watchdog greenlet
would not run). Over the soft memory limit, free heap is first handed back to the system
with glibc's ``malloc_trim(0)`` (freed Python memory often stays in the process: arenas
and fragmented pools) and RSS is read again; still over, the worker recycles. The hard
ceiling is enforced from outside, by the supervisor (runtime.supervisor).

RSS is read with ``os.pread`` on a kept-open ``/proc/self/statm`` (about 1.5 µs,
NOTES-observability #13), so the check after every job costs next to nothing; where /proc
is missing, psutil is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("runtime.worker")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: How many of the jobs that grew RSS most a recycle event names.
TOP_GROWERS = 5
#: Exit code of a worker process that stopped to be recycled (a limit was crossed).
EXIT_RECYCLED = 8
#: Exit code of bad arguments or settings (runtime.cli.EXIT_USAGE): not worth a restart.
EXIT_USAGE = 2
#: Recycle and kill events kept in Redis (newest first), for `runtime events`.
MAX_EVENTS = 1000
#: Env of a worker started by a supervisor: the supervisor's pid and registry id.
SUPERVISOR_PID_ENV, SUPERVISOR_ID_ENV = "RUNTIME_SUPERVISOR_PID", "RUNTIME_SUPERVISOR_ID"


class RSS:
    """Reads this process's resident set size, in bytes (``RSS()()``).

    ``source`` is "statm" (a kept-open /proc/self/statm) or "psutil". Raises OSError when
    neither can read it.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        try:
            self.fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
            self.source = "statm"
        except OSError:
            import psutil
            self.fd, self.proc, self.source = None, psutil.Process(), "psutil"

    def __call__(self) -> int:
        if self.fd is not None:
            return int(os.pread(self.fd, 64, 0).split()[1]) * _PAGE
        return int(self.proc.memory_info().rss)


_libc: Any = None


def load_libc() -> bool:
    """Load glibc's ``malloc_trim`` now (call it from the main thread: the fallback lookup
    ``find_library`` runs ldconfig in a subprocess, which gevent cannot do from another
    thread); False where there is none (musl, macOS)."""
    global _libc
    if _libc is None:
        for name in ("libc.so.6", None):
            try:
                lib = ctypes.CDLL(name or ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
                break
            except (OSError, AttributeError, TypeError):
                _libc = False
    return bool(_libc)


def malloc_trim() -> bool:
    """Return free heap memory to the system (glibc ``malloc_trim(0)``); False where there
    is no glibc (musl, macOS), True when it ran."""
    if not load_libc():
        return False
    _libc.malloc_trim(0)
    return True


def fmt_bytes(n: float | None) -> str:
    """``536870912`` -> ``'512.0 MiB'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@dataclass
class Recycle:
    """Why a worker recycles: ``reason`` is "mem-limit", "max-jobs" or "max-time"."""

    reason: str
    detail: str
    rss_bytes: int | None = None
    at: float = field(default_factory=time.time)


class Limits:
    """The recycling limits of one worker process (from Settings: ``mem_limit_bytes``,
    ``max_jobs``, ``max_time_s``); thread-safe, called from the hub and the heartbeat thread.

    ``after_job(job_id)`` and ``tick()`` return a :class:`Recycle` the first time a limit is
    crossed, else None. Growth per job (RSS now minus RSS at the previous check, so it also
    holds what concurrent jobs did meanwhile) is kept for the :data:`TOP_GROWERS` largest.
    """

    def __init__(self, settings: Any) -> None:
        self.soft = settings.mem_limit_bytes
        self.max_jobs = settings.max_jobs
        self.max_time_s = settings.max_time_s
        self.started = time.monotonic()
        self.jobs = 0
        self.jobs_since_check = 0
        self._lock = threading.Lock()
        self._crossed: Recycle | None = None
        self._last_rss = 0
        self._growers: list[tuple[int, str]] = []  # min-heap of (growth bytes, job id)
        self.trims = 0
        self.rss: RSS | None = None  # None: RSS cannot be read here
        try:
            self.rss = RSS()
            self._last_rss = self.rss()
        except Exception as exc:  # noqa: BLE001 - OSError, psutil.Error...: said loudly below
            self.rss = None
            if self.soft:
                log.error("MEMORY LIMIT NOT ENFORCED: this system does not let the worker read its "
                          "RSS (%s: %s); --mem-limit %s will never recycle it", type(exc).__name__, exc,
                          fmt_bytes(self.soft))
        #: the soft limit is checked (set and RSS readable); any limit is: fixed from here on
        self._soft_on = bool(self.soft and self.rss is not None)
        self.active = bool(self._soft_on or self.max_jobs or self.max_time_s)
        if self.soft:
            load_libc()  # here, in the main thread (see load_libc)
            if self._last_rss > self.soft:
                log.error("--mem-limit %s is below this worker's RSS at start (%s): it will recycle after "
                          "every job; raise the limit", fmt_bytes(self.soft), fmt_bytes(self._last_rss))

    def after_job(self, job_id: str) -> Recycle | None:
        """Count a finished job and check every limit (call once per job)."""
        with self._lock:
            self.jobs += 1
            self.jobs_since_check += 1
            if self._crossed:
                return None
            if self._soft_on:
                rss = self.rss()
                grown = rss - self._last_rss
                self._last_rss = rss
                if grown > 0:
                    item = (grown, job_id)
                    if len(self._growers) < TOP_GROWERS:
                        heapq.heappush(self._growers, item)
                    elif item > self._growers[0]:
                        heapq.heapreplace(self._growers, item)
                if rss > self.soft and self._over_after_trim():
                    return self._cross("mem-limit", f"RSS {fmt_bytes(self._last_rss)} over the soft limit "
                                       f"{fmt_bytes(self.soft)} after malloc_trim")
            if self.max_jobs and self.jobs >= self.max_jobs:
                return self._cross("max-jobs", f"{self.jobs} jobs run (max_jobs={self.max_jobs})")
        return None

    def tick(self) -> Recycle | None:
        """The timer check (heartbeat thread): memory and time alive."""
        with self._lock:
            if self._crossed:
                return None
            if self._soft_on and self.rss() > self.soft and self._over_after_trim():
                return self._cross("mem-limit", f"RSS {fmt_bytes(self._last_rss)} over the soft limit "
                                   f"{fmt_bytes(self.soft)} after malloc_trim (timer check)")
            self.jobs_since_check = 0
            alive = time.monotonic() - self.started
            if self.max_time_s and alive >= self.max_time_s:
                return self._cross("max-time", f"alive {alive:.1f} s (max_time_s={self.max_time_s})")
        return None

    def claim_budget(self) -> int | None:
        """How many more jobs this process may claim under ``max_jobs`` (None = no cap)."""
        return None if not self.max_jobs else max(0, self.max_jobs - self.jobs)

    def _over_after_trim(self) -> bool:
        assert self.rss is not None
        if malloc_trim():
            self.trims += 1
        self._last_rss = self.rss()
        return self._last_rss > self.soft

    def _cross(self, reason: str, detail: str) -> Recycle:
        rss = None
        if self.rss is not None:
            try:
                rss = self.rss()
            except Exception:  # noqa: BLE001 - the event says null
                pass
        self._crossed = Recycle(reason, detail, rss)
        return self._crossed

    def event(self, recycle: Recycle, worker_id: str) -> dict[str, Any]:
        """The recycle event stored in Redis (see Worker.recycle): JSON-ready dict with
        ``rss_bytes``, ``limit_bytes``, ``jobs`` (since the process started),
        ``jobs_since_last_check`` (since the last timer check) and the ``top_growers``
        (job id and growth in bytes, largest first)."""
        with self._lock:
            top = sorted(self._growers, reverse=True)
            since = self.jobs_since_check
        return {"event": "recycle", "worker": worker_id, "pid": os.getpid(), "at": recycle.at,
                "reason": recycle.reason, "detail": recycle.detail, "rss_bytes": recycle.rss_bytes,
                "limit_bytes": self.soft, "jobs": self.jobs, "jobs_since_last_check": since,
                "alive_s": round(time.monotonic() - self.started, 3), "malloc_trims": self.trims,
                "top_growers": [{"job": j, "rss_growth_bytes": g} for g, j in top]}


def notify_supervisor() -> bool:
    """Send SIGUSR1 to this process's supervisor (the parent named by the environment), so
    it starts a replacement now; False when there is none."""
    import signal
    want = os.environ.get(SUPERVISOR_PID_ENV)
    if not want or not want.isdigit() or os.getppid() != int(want):
        return False
    try:
        os.kill(int(want), signal.SIGUSR1)
    except OSError:
        return False
    return True


def record_event(client: Any, key: str, event: dict[str, Any]) -> None:
    """Push ``event`` (a JSON-ready dict) on the events list, keeping the newest MAX_EVENTS;
    logs and carries on when Redis refuses."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(event, separators=(",", ":"), default=str))
        pipe.ltrim(key, 0, MAX_EVENTS - 1)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - redis.RedisError; never fatal
        log.warning("event not recorded (%s): %s", exc, event)
