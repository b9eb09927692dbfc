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
import time
from typing import Any

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows
from runtime.process import RSS, rss_reader
from runtime.tasks import chosen, split_patterns, task_option
from runtime.units import fmt_seconds, plural


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


#: The heap diff methods (``--trace-memory METHOD:PATTERNS``, ``@task(trace_memory=METHOD)``)
METHODS = ("tracemalloc", "guppy")


def parse_rules(raw: str | None) -> list[tuple[str, str]]:
    """``trace_memory`` as (pattern, method) rules: comma-separated items ``PATTERN``
    (tracemalloc), ``METHOD:PATTERN`` or ``METHOD`` alone (every task). Raises ConfigError
    for a method that is not one of METHODS, and for a bare word that is neither a method
    nor could match a task path (no dot, no wildcard: a mistyped method)."""
    from runtime.errors import ConfigError
    rules = []
    for item in split_patterns(raw):
        method, sep, pattern = item.partition(":")
        if not sep:
            if item not in METHODS and "." not in item and not any(c in item for c in "*?["):
                raise ConfigError(f"trace_memory: {item!r} is neither a method ({', '.join(METHODS)}) nor a pattern "
                                  "of task paths (module.function, fnmatch wildcards)")
            method, pattern = (item, "*") if item in METHODS else ("tracemalloc", item)
        if method not in METHODS:
            raise ConfigError(f"trace_memory: unknown heap diff method {method!r} (one of {', '.join(METHODS)})")
        rules.append((pattern or "*", method))
    return rules


class HeapDiff(Middleware):
    """What a job left behind on the Python heap, by one of two methods.

    Chosen jobs (``--trace-memory [PATTERNS]``, ``RUNTIME_TRACE_MEMORY``, or
    ``@task(trace_memory=True)``) run alone (the worker drains its pool first, then
    refills), because any heap diff is process-wide. The method (parse_rules,
    ``@task(trace_memory="guppy")``):

    - ``tracemalloc`` (the default): on only while such a job runs (1 frame), a snapshot
      before and after; it slows allocation-heavy code meanwhile (measured +380 % on an
      allocation loop). ``report["heap_diff"] = {"method": "tracemalloc", "top":
      [{"where": "file:line", "count": +n, "bytes": +n}...], "total_bytes": +n, ...}``:
      the 10 sites whose live memory grew most.
    - ``guppy`` (guppy3): ``setrelheap()`` before the job, ``heap()`` after it: the objects
      made during the run and still alive, partitioned by kind (class, or dict of a
      class). No cost while the job runs; ``heap()`` walks the process's objects (tens of
      ms to seconds in a big process). ``report["heap_diff"] = {"method": "guppy", "kinds":
      [{"kind": "dict (no owner)", "count": n, "bytes": n}...], "total_bytes": n,
      "total_count": n, ...}``: the 10 kinds holding most bytes.

    Both add ``"alone": true``, ``"cost_s"`` (seconds the method added to the job's run,
    outside the task: snapshots, or setrelheap and heap) and a ``"note"``.
    """

    task_options = {"trace_memory": "True (or a method: 'tracemalloc', 'guppy') to store a heap diff of every job"}
    report_keys = ("heap_diff",)
    TOP = 10

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.rules = parse_rules(getattr(settings, "trace_memory", ""))
        self.patterns = [p for p, _ in self.rules]

    def method_for(self, path: str) -> str | None:
        """The heap diff method for task ``path``, or None when it gets none."""
        import fnmatch
        for pattern, method in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return method
        opt = task_option(path, "trace_memory")
        if not opt:
            return None
        return opt if opt in METHODS else "tracemalloc"

    def applies(self, path: str) -> bool:
        return chosen(path, self.patterns, "trace_memory")

    def exclusive(self, job: JobContext) -> bool:
        return self.applies(job.path)

    def before_job(self, job: JobContext) -> None:
        method = self.method_for(job.path)
        if method is None:
            return
        t0 = time.perf_counter()
        if method == "guppy":
            from guppy import hpy
            h = hpy()
            h.setrelheap()
            job.state["heap_diff"] = ("guppy", h, None, time.perf_counter() - t0)
            return
        import tracemalloc
        started_here = not tracemalloc.is_tracing()
        if started_here:
            tracemalloc.start(1)
        job.state["heap_diff"] = ("tracemalloc", tracemalloc.take_snapshot(), started_here, time.perf_counter() - t0)

    def after_job(self, job: JobContext, outcome: Any) -> None:
        held = job.state.pop("heap_diff", None)
        if held is None:
            return
        method, first, started_here, cost = held
        t0 = time.perf_counter()
        diff = self._guppy(first) if method == "guppy" else self._tracemalloc(first, started_here)
        del first, held
        diff.update(method=method, alone=True, cost_s=round(cost + time.perf_counter() - t0, 6))
        job.report["heap_diff"] = diff

    def _guppy(self, h: Any) -> dict[str, Any]:
        hs = h.heap()
        kinds = [{"kind": str(r.name), "count": int(r.count), "bytes": int(r.size)}
                 for r in sorted(hs.stat.get_rows(), key=lambda r: -r.size)[: self.TOP]]
        return {"kinds": kinds, "total_bytes": int(hs.size), "total_count": int(hs.count),
                "note": "guppy3: objects made during the job's run and alive after it, by kind; the job ran alone"}

    def _tracemalloc(self, before: Any, started_here: bool) -> dict[str, Any]:
        import tracemalloc
        after = tracemalloc.take_snapshot()
        if started_here:
            tracemalloc.stop()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
        grown = [s for s in stats if s.size_diff > 0][: self.TOP]
        return {
            "top": [{"where": f"{s.traceback[0].filename.rsplit('/', 1)[-1]}:{s.traceback[0].lineno}",
                     "file": s.traceback[0].filename, "count": s.count_diff, "bytes": s.size_diff} for s in grown],
            "total_bytes": sum(s.size_diff for s in stats),
            "note": "tracemalloc diff of the whole process over the job's run; the job ran alone",
        }

    def describe(self, job: Job) -> Rows:
        diff = (job.report or {}).get("heap_diff")
        if not diff:
            return []
        cost = f", cost {fmt_seconds(diff['cost_s'])}" if diff.get("cost_s") is not None else ""
        if diff.get("method") == "guppy":
            rows = [("heap diff", f"{diff['total_bytes'] / 1024:+.1f} KiB in {diff['total_count']:+d} objects made "
                                  f"and kept over the run (guppy3{cost}; the job ran alone); by kind:")]
            for k in diff["kinds"][:5]:
                rows.append(("", f"{k['bytes'] / 1024:+9.1f} KiB {k['count']:+7d} objects  {k['kind']}"))
            return rows
        rows = [("heap diff", f"{diff['total_bytes'] / 1024:+.1f} KiB over the run (tracemalloc{cost}; "
                              "the job ran alone); grew most:")]
        for site in diff["top"][:5]:
            rows.append(("", f"{site['bytes'] / 1024:+9.1f} KiB {site['count']:+7d} blocks  {site['where']}"))
        return rows
