"""Recycling limits of one worker process: memory (soft), jobs run, time alive.

A worker with a limit is checked after every job and, by its native heartbeat thread,
every ``mem_check_interval_s`` (a CPU-bound job holds the gevent hub, so a watchdog greenlet
would not run). Over the soft memory limit, free heap is first handed back to the system
with glibc's ``malloc_trim(0)`` (freed Python memory often stays in the process: arenas
and fragmented pools) and RSS is read again; still over, the worker recycles. The hard
ceiling is enforced from outside, by the supervisor (runtime.supervisor.watchdog).

RSS is read with runtime.process.RSS (about 1.5 µs), so the check after every job costs
next to nothing. Where RSS cannot be read the soft limit is off (one warning per process,
and an error at start when ``--mem-limit`` asked for it); the other limits still hold.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..process import RSS, load_libc, malloc_trim, rss_reader
from ..settings import Settings
from ..units import fmt_bytes

log = logging.getLogger("runtime.worker")

#: How many of the jobs that grew RSS most a recycle event names.
TOP_GROWERS = 5


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

    def __init__(self, settings: Settings) -> None:
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
        self.rss: RSS | None = rss_reader()  # None: RSS cannot be read here (said once)
        if self.rss is not None:
            self._last_rss = self.rss.read() or 0
        elif self.soft:
            log.error("MEMORY LIMIT NOT ENFORCED: this system does not let the worker read its RSS; "
                      "--mem-limit %s will never recycle it", fmt_bytes(self.soft))
        #: the soft limit is checked (set and RSS readable; off for good once a read fails)
        self._soft_on = bool(self.soft and self.rss is not None)
        self.active = bool(self._soft_on or self.max_jobs or self.max_time_s)
        if self.soft:
            load_libc()  # here, in the main thread (see load_libc)
            if self._last_rss > self.soft:
                log.error("--mem-limit %s is below this worker's RSS at start (%s): it will recycle after "
                          "every job; raise the limit", fmt_bytes(self.soft), fmt_bytes(self._last_rss))

    def baseline(self) -> None:
        """Measure growth from now (the worker's start-up done): what imports and
        middleware start-up grew is nobody's job, and must not make the first job of a
        fresh worker its top grower."""
        with self._lock:
            rss = self.rss.read() if self.rss is not None else None
            if rss is not None:
                self._last_rss = rss

    def after_job(self, job_id: str) -> Recycle | None:
        """Count a finished job and check every limit (call once per job)."""
        with self._lock:
            self.jobs += 1
            self.jobs_since_check += 1
            if self._crossed:
                return None
            rss = self._read() if self._soft_on else None
            if rss is not None and self.soft is not None:
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
            rss = self._read() if self._soft_on else None
            if rss is not None and self.soft is not None and rss > self.soft and self._over_after_trim():
                return self._cross("mem-limit", f"RSS {fmt_bytes(self._last_rss)} over the soft limit "
                                   f"{fmt_bytes(self.soft)} after malloc_trim (timer check)")
            self.jobs_since_check = 0
            alive = time.monotonic() - self.started
            if self.max_time_s and alive >= self.max_time_s:
                return self._cross("max-time", f"alive {alive:.1f} s (max_time_s={self.max_time_s})")
        return None

    def _read(self) -> int | None:
        """RSS in bytes; None when it cannot be read, which ends the soft limit's checks
        (said once per process: runtime.process.rss_unreadable)."""
        rss = self.rss.read() if self.rss is not None else None
        if rss is None:
            self._soft_on = False
        return rss

    def _over_after_trim(self) -> bool:
        assert self.soft is not None
        if malloc_trim():
            self.trims += 1
        rss = self._read()
        if rss is None:
            return False
        self._last_rss = rss
        return rss > self.soft

    def _cross(self, reason: str, detail: str) -> Recycle:
        self._crossed = Recycle(reason, detail, self.rss.read() if self.rss is not None else None)
        return self._crossed

    def event(self, recycle: Recycle, worker_id: str) -> dict[str, Any]:
        """The recycle event stored in Redis (see Worker.recycle): JSON-ready dict with
        ``rss_bytes``, ``limit_bytes``, ``jobs_run`` (since the process started),
        ``jobs_since_last_check`` (since the last timer check) and the ``top_growers``
        (job id and growth in bytes, largest first)."""
        with self._lock:
            top = sorted(self._growers, reverse=True)
            since = self.jobs_since_check
        return {"event": "recycle", "worker": worker_id, "pid": os.getpid(), "at": recycle.at,
                "reason": recycle.reason, "detail": recycle.detail, "rss_bytes": recycle.rss_bytes,
                "limit_bytes": self.soft, "jobs_run": self.jobs, "jobs_since_last_check": since,
                "alive_s": round(time.monotonic() - self.started, 3), "malloc_trims": self.trims,
                "top_growers": [{"job": j, "rss_growth_bytes": g} for g, j in top]}
