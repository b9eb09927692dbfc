"""Memory of every job: the worker's RSS before and after it, always on and cheap.

RSS is read with ``os.pread`` on a kept-open ``/proc/self/statm`` (about 1.5 µs,
measured). It measures the process, not the job: a job's RSS delta includes what the
jobs that overlapped it did meanwhile (the report says how many did: 0, and the delta is
the job's own, give or take the runtime). A per-job heap diff that names what a job left behind is
the opt-in ``--trace-memory`` (:class:`HeapDiff`), which runs such jobs alone.
Where /proc is missing (not Linux), psutil is used; where RSS cannot be read at all (a
locked-down /proc, psutil denied), reports have no ``memory`` and jobs run as usual (one
warning per process, runtime.process.rss_unreadable).
"""

from __future__ import annotations

import os
from typing import Any

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows
from runtime.process import RSS, rss_reader
from runtime.tasks import chosen, split_patterns
from runtime.units import plural


class Memory(Middleware):
    """Adds ``report["memory"] = {"rss_before", "rss_after", "rss_delta" (bytes),
    "overlapping"}``: ``overlapping`` counts the other jobs of this worker whose run
    overlapped this one's (started before it ended and ended after it started: those
    running when it started, and those that started while it ran)."""

    report_keys = ("memory",)

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.rss: RSS | None = None  # None: not opened yet in this process, or unreadable
        self._pid = 0  # the process self.rss was opened in
        self.running = 0  # jobs between before_job and after_job now
        self.started = 0  # jobs that passed before_job so far

    def _read(self) -> int | None:
        """This process's RSS in bytes, or None where it cannot be read."""
        if self._pid != os.getpid():  # first use, or after fork: our own /proc/self
            self._pid, self.rss = os.getpid(), rss_reader()
        rss = self.rss.read() if self.rss is not None else None
        if rss is None:
            self.rss = None  # off for good in this process
        return rss

    def before_job(self, job: JobContext) -> None:
        job.state["overlap"] = (self.running, self.started)
        self.running += 1
        self.started += 1
        before = self._read()
        if before is not None:
            job.state["rss_before"] = before

    def after_job(self, job: JobContext, outcome: Any) -> None:
        self.running -= 1
        running_then, started_then = job.state.pop("overlap", (0, self.started - 1))
        before = job.state.pop("rss_before", None)
        after = self._read() if before is not None else None
        if before is None or after is None:
            return
        job.report["memory"] = {"rss_before": before, "rss_after": after, "rss_delta": after - before,
                                "overlapping": running_then + self.started - started_then - 1}

    def describe(self, job: Job) -> Rows:
        mem = (job.report or {}).get("memory")
        if not mem:
            return []
        others = mem.get("overlapping", mem.get("concurrent", 0))  # "concurrent": documents stored before
        company = "ran alone" if not others else f"{others} other {plural(others, 'job')} ran meanwhile"
        return [("memory", f"rss {mem['rss_before'] / 2**20:.1f} -> {mem['rss_after'] / 2**20:.1f} MiB "
                           f"({mem['rss_delta'] / 2**20:+.2f} MiB, {company})")]


class HeapDiff(Middleware):
    """What a job left behind on the Python heap: a tracemalloc diff of the job's run.

    Chosen jobs (``--trace-memory [PATTERNS]``, ``RUNTIME_TRACE_MEMORY``, or
    ``@task(trace_memory=True)``) run alone (the worker drains its pool first, then
    refills), because any heap diff is process-wide. tracemalloc (1 frame) is on only
    while such a job runs; it slows allocation-heavy code meanwhile (measured +380 % on an
    allocation loop), which is why it is opt-in. guppy3 and
    objgraph are kept for explicit debugging (diagnostics.leaks), not per-job use.

    ``report["heap_diff"] = {"top": [{"where": "file:line", "count": +n, "bytes": +n}...],
    "total_bytes": +n, "alone": true, "note": ...}``: the 10 sites whose live memory grew most.
    """

    task_options = {"trace_memory": "True to store a heap diff (tracemalloc) of every job of this task"}
    report_keys = ("heap_diff",)
    TOP = 10

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.patterns = split_patterns(getattr(settings, "trace_memory", ""))

    def applies(self, path: str) -> bool:
        return chosen(path, self.patterns, "trace_memory")

    def exclusive(self, job: JobContext) -> bool:
        return self.applies(job.path)

    def before_job(self, job: JobContext) -> None:
        if not self.exclusive(job):
            return
        import tracemalloc
        started_here = not tracemalloc.is_tracing()
        if started_here:
            tracemalloc.start(1)
        job.state["heap_diff"] = (tracemalloc.take_snapshot(), started_here)

    def after_job(self, job: JobContext, outcome: Any) -> None:
        held = job.state.pop("heap_diff", None)
        if held is None:
            return
        import tracemalloc
        before, started_here = held
        after = tracemalloc.take_snapshot()
        if started_here:
            tracemalloc.stop()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
        grown = [s for s in stats if s.size_diff > 0][: self.TOP]
        job.report["heap_diff"] = {
            "top": [{"where": f"{s.traceback[0].filename.rsplit('/', 1)[-1]}:{s.traceback[0].lineno}",
                     "file": s.traceback[0].filename, "count": s.count_diff, "bytes": s.size_diff} for s in grown],
            "total_bytes": sum(s.size_diff for s in stats),
            "alone": True,
            "note": "tracemalloc diff of the whole process over the job's run; the job ran alone",
        }

    def describe(self, job: Job) -> Rows:
        diff = (job.report or {}).get("heap_diff")
        if not diff:
            return []
        rows = [("heap diff", f"{diff['total_bytes'] / 1024:+.1f} KiB over the run (the job ran alone); grew most:")]
        for site in diff["top"][:5]:
            rows.append(("", f"{site['bytes'] / 1024:+9.1f} KiB {site['count']:+7d} blocks  {site['where']}"))
        return rows
