"""Timing of every job: queue wait, wall time, CPU time of the job's own greenlet, switches.

CPU is charged per greenlet from greenlet's switch events (``greenlet.settrace``): at each
switch, the thread CPU time since the previous switch goes to the greenlet that leaves.
So a job's ``cpu_s`` excludes what other greenlets ran while it waited, which
``time.process_time()`` around the job would include. Outside gevent (``run_task``)
there are no switches and ``cpu_s`` is the thread's CPU time over the run.
Measured cost: one ``time.thread_time()`` call and two dict lookups per switch.
"""

from __future__ import annotations

import time
from typing import Any

import greenlet

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows, WorkerView
from runtime.units import fmt_seconds

_thread_time = time.thread_time
_perf_counter = time.perf_counter
_getcurrent = greenlet.getcurrent


class Timing(Middleware):
    """Adds ``report["timing"] = {"wait_s", "wall_s", "cpu_s", "switches"}`` (seconds).

    One definition of each, the same everywhere (report, ``runtime job``, metrics, spans):

    - ``wait_s``: from due (queued, or its delay or retry time) to started, the job's own
      ``started_at`` (when the worker began the attempt): the document's ``wait_s``;
      ``wait_reason`` when it waited in the worker after its claim (JobContext.wait_reason);
    - ``wall_s``: the task's own run (runtime.execution.AttemptResult.call_s), within the
      attempt's ``run_s`` (started to ended), which also holds runtime's hooks and storing;
    - ``cpu_s``: CPU time of the job's greenlet while this middleware's hooks enclose the
      task (it is the last middleware by default: the task alone);
    - ``switches``: how many times the job's greenlet resumed.
    """

    report_keys = ("timing",)

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._active: dict[Any, list[float]] = {}  # greenlet -> [cpu_s, switches, since]
        self._trace: Any = None

    def _install(self) -> None:
        self._trace = self._make_trace()
        greenlet.settrace(self._trace)

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        """Take the switch hook out again (when it is still the last one installed)."""
        if self._trace is not None and greenlet.gettrace() is self._trace:
            greenlet.settrace(self._trace.previous)
        self._trace = None

    def _make_trace(self) -> Any:
        """The switch hook, as a closure over locals: it runs at every greenlet switch of
        the process (several per job), so it looks nothing up on ``self`` and reads the
        thread's CPU clock only when a job's greenlet is one of the two."""
        active = self._active
        previous = greenlet.gettrace()
        thread_time = _thread_time

        def trace(event: str, args: Any) -> None:
            if active and (event == "switch" or event == "throw"):
                origin, target = args
                a = active.get(origin)
                b = active.get(target)
                if a is not None or b is not None:
                    now = thread_time()
                    if a is not None:
                        a[0] += now - a[2]
                    if b is not None:
                        b[1] += 1
                        b[2] = now
            if previous is not None:
                previous(event, args)
        trace.previous = previous  # type: ignore[attr-defined]
        return trace

    def on_worker_start(self, worker: WorkerView | None) -> None:
        if self._trace is None:
            self._install()

    def before_job(self, job: JobContext) -> None:
        if self._trace is None:
            self._install()
        self._active[_getcurrent()] = [0.0, 0, _thread_time(), _perf_counter()]

    def after_job(self, job: JobContext, outcome: Any) -> None:
        acc = self._active.pop(_getcurrent(), None)
        if acc is None:
            return
        cpu = acc[0] + _thread_time() - acc[2]
        wall = getattr(outcome, "call_s", None)
        if wall is None:  # a kill that landed in a hook: the task's run is unknown
            wall = _perf_counter() - acc[3]
        t = {"wall_s": round(wall, 6), "cpu_s": round(cpu, 6), "switches": acc[1]}
        if job.wait_s is not None:
            t["wait_s"] = job.wait_s  # the document's, to the microsecond
        if job.wait_reason is not None:
            t["wait_reason"] = job.wait_reason
        job.report["timing"] = t

    def describe(self, job: Job) -> Rows:
        t = (job.report or {}).get("timing")
        if not t:
            return []
        hooks = ""
        if job.run_s is not None and t.get("wall_s") is not None:
            hooks = f"  (of its run, {fmt_seconds(max(0.0, job.run_s - t['wall_s']))} was runtime's own hooks)"
        why = _WHY.get(t.get("wait_reason") or "", "")
        return [("timing", f"the task {fmt_seconds(t.get('wall_s'))}  cpu {fmt_seconds(t.get('cpu_s'))}  "
                           f"switches {t.get('switches', '-')}{hooks}{why}")]


#: What ``runtime job`` says of a wait_reason
_WHY = {"busy": "  (it waited, prefetched, for a free greenlet)",
        "exclusive": "  (it waited for a job that runs alone, or for the others to end before it ran alone)"}
