"""Per-job profiles with pyinstrument that describe only their own job.

pyinstrument's own modes, under gevent, either mix other greenlets' frames into a
profile or slow every greenlet, and two profiles clobber each other's per-thread state
(measured: 95 % of the samples came from other greenlets). So this samples with pyinstrument's C sampler
(``setstatprofile``, one per process) and files each sample under the greenlet running at
that moment: only greenlets of profiled jobs keep samples. The time a profiled job's
greenlet spends switched out (waiting on I/O, a sleep, a lock) is added, when it resumes,
to the frame where it waited, under a ``[waiting: greenlet switched out]`` leaf, the way
pyinstrument's async mode shows an ``await``. Several jobs can be profiled at once.

Which jobs: ``runtime worker --profile`` (all), ``RUNTIME_PROFILE='tasks_example.files.*'``
(fnmatch patterns, comma-separated), or ``@task(profile=True)``.

Stored with the job: ``report["profile"]`` (duration, samples, the 10 functions with the
most self time) and the artifact ``profile``, the gzipped pyinstrument Session JSON
(base64), from which ``runtime job ID --artifact profile`` renders text and ``--html
FILE`` renders HTML on demand (the HTML itself is ~90 KB, so it is never stored).
"""

from __future__ import annotations

import base64
import contextvars
import gzip
import json
import os
import sys
import time
from typing import Any

import greenlet

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows
from runtime.resets import on_reset
from runtime.tasks import chosen, declared, split_patterns
from runtime.units import fmt_seconds

INTERVAL_S = 0.001
#: Where runtime's own frames come from (its packages, wherever installed)
_OWN = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), pkg, "")
             for pkg in ("runtime", "diagnostics"))
WAITING = "[waiting: greenlet switched out]\x00<gevent>\x000"
ROOT = "job greenlet\x00<greenlet>\x000"


def build_stack(frame: Any, event: str = "return", arg: Any = None, trim_gevent: bool = False) -> list[str]:
    """Frame identifiers root first, as pyinstrument records them, under one ROOT (not
    pyinstrument's per-thread root: under gevent each greenlet looks like a thread),
    without runtime's own frames around the task (the chain, execution, the task's
    binding): a profile starts at the task. ``trim_gevent`` drops gevent's own frames
    from the leaf end (the switch machinery)."""
    from pyinstrument.low_level.stat_profile import get_frame_info
    stack: list[str] = []
    if event == "call":
        frame = frame.f_back if frame else None
    elif event in ("c_return", "c_exception"):
        name = getattr(arg, "__qualname__", getattr(arg, "__name__", "?"))
        stack.append(f"{name}\x00<built-in>\x000")
    if trim_gevent:
        while frame is not None and "/gevent/" in frame.f_code.co_filename:
            frame = frame.f_back
    keep = 0  # frames up to the outermost one not runtime's own: the job's part of the stack
    while frame is not None:
        stack.append(get_frame_info(frame))
        if not frame.f_code.co_filename.startswith(_OWN):
            keep = len(stack)
        frame = frame.f_back
    if keep:
        del stack[keep:]
    stack.append(ROOT)
    stack.reverse()
    return stack
_getcurrent = greenlet.getcurrent
#: setstatprofile wants a ContextVar to watch (for asyncio); this one never changes
_UNUSED_VAR: contextvars.ContextVar[Any] = contextvars.ContextVar("runtime_profiler", default=None)


class _JobSamples:
    __slots__ = ("records", "last", "paused_at", "started", "t0", "cpu", "start_stack")

    def __init__(self) -> None:
        self.records: list[tuple[list[str], float]] = []
        self.last = time.perf_counter()
        self.paused_at: float | None = None
        self.started = time.time()
        self.t0 = self.last
        self.cpu = 0.0
        self.start_stack: list[str] = []


class GreenletSampler:
    """The process's one sampler; each profiled greenlet has its own records."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.active: dict[Any, _JobSamples] = {}
        self._previous_trace: Any = None

    def add(self, g: Any) -> _JobSamples:
        if not self.active:
            self._start()
        s = self.active[g] = _JobSamples()
        return s

    def remove(self, g: Any) -> _JobSamples | None:
        s = self.active.pop(g, None)
        if not self.active:
            self._stop()
        return s

    def _start(self) -> None:
        # Sampling by SIGPROF (an interval timer on the process's CPU time) costs only per
        # sample. pyinstrument's own hook (setstatprofile) runs on every call and return:
        # measured here, it made a call-heavy 250 ms job 5x slower. Signals need the main
        # thread (where the worker's hub runs); elsewhere the pyinstrument hook is used.
        import signal
        try:  # raises ValueError outside the main OS thread (greenlets all count as in it)
            self._old_handler = signal.signal(signal.SIGPROF, self._on_signal)
            self._signals = True
        except ValueError:
            self._signals = False
        if self._signals:
            signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)
        else:
            from pyinstrument.low_level.stat_profile import setstatprofile
            setstatprofile(self._sample, self.interval_s, _UNUSED_VAR, "walltime_thread")
        self._previous_trace = greenlet.settrace(self._trace)

    def _stop(self) -> None:
        import signal
        if self._signals:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, self._old_handler or signal.SIG_DFL)
        else:
            from pyinstrument.low_level.stat_profile import setstatprofile
            setstatprofile(None)
        greenlet.settrace(self._previous_trace)
        self._previous_trace = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._sample(frame, "signal", None)

    def _sample(self, frame: Any, event: str, arg: Any) -> None:
        if event == "context_changed":
            return
        s = self.active.get(_getcurrent())
        if s is None:
            return  # another greenlet's code: not this job's profile
        if s.paused_at is not None:
            # it is resuming: a signal landed in _trace before that charged the wait (which
            # this sample would otherwise take, whole, as _trace's own time)
            return
        now = time.perf_counter()
        s.records.append((build_stack(frame, event, arg), now - s.last))
        s.last = now

    def _trace(self, event: str, args: Any) -> None:
        # greenlet calls this in the target's context, after the switch: the origin is
        # suspended (gr_frame = where it stopped), the target resumes at our caller's frame
        if event in ("switch", "throw"):
            origin, target = args
            s = self.active.get(origin)
            t = self.active.get(target)
            if s is not None or t is not None:
                now = time.perf_counter()
                if s is not None:  # it ran since its last sample: charge that to the code that
                    frame = origin.gr_frame  # called into gevent to wait
                    if frame is not None:
                        s.records.append((build_stack(frame, trim_gevent=True), now - s.last))
                    s.last = now
                    s.paused_at = now
                if t is not None and t.paused_at is not None:  # it waited: charge that to the wait
                    stack = build_stack(sys._getframe(1))
                    stack.append(WAITING)
                    t.records.append((stack, now - t.last))
                    t.last = now
                    t.paused_at = None
        if self._previous_trace is not None:
            self._previous_trace(event, args)


_sampler: GreenletSampler | None = None


@on_reset
def _forget_sampler() -> None:
    global _sampler
    if _sampler is not None and not _sampler.active:
        _sampler = None


def session_of(s: _JobSamples, description: str, interval_s: float) -> Any:
    from pyinstrument.session import Session
    duration = time.perf_counter() - s.t0
    s.cpu = sum(t for stack, t in s.records if stack and stack[-1] != WAITING)  # its own running time
    return Session(frame_records=s.records, start_time=s.started, duration=duration,
                   min_interval=interval_s, max_interval=interval_s, sample_count=len(s.records),
                   start_call_stack=s.start_stack, target_description=description, cpu_time=s.cpu,
                   sys_path=list(sys.path), sys_prefixes=Session.current_sys_prefixes())


def encode_session(session: Any) -> str:
    """A Session as base64 of gzipped JSON (what is stored with the job)."""
    return base64.b64encode(gzip.compress(json.dumps(session.to_json()).encode(), 6)).decode()


def decode_session(blob: str) -> Any:
    """The pyinstrument Session stored with a job."""
    from pyinstrument.session import Session
    return Session.from_json(json.loads(gzip.decompress(base64.b64decode(blob))))


def _runtime_frames() -> dict[str, str]:
    """pyinstrument's ``hide_regex`` for runtime's own frames: library code, folded into
    "[N frames hidden]" like redis's or gevent's where the task calls into runtime
    (set_progress...)."""
    import re
    return {"hide_regex": "|".join(re.escape(own) + ".*" for own in _OWN)}


def render_text(session: Any) -> str:
    from pyinstrument.renderers import ConsoleRenderer
    return str(ConsoleRenderer(unicode=True, color=False, short_mode=False,
                               processor_options=_runtime_frames()).render(session))


def render_html(session: Any) -> str:
    from pyinstrument.renderers import HTMLRenderer
    return str(HTMLRenderer().render(session))


def top_functions(session: Any, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` functions with the most self time: function, file:line, seconds."""
    totals: dict[str, float] = {}
    for stack, t in session.frame_records:
        if stack:
            totals[stack[-1]] = totals.get(stack[-1], 0.0) + t
    out = []
    for ident, t in sorted(totals.items(), key=lambda kv: -kv[1])[:n]:
        parts = ident.split("\x00")
        func, file, line = (parts + ["", "", ""])[:3]
        line = line.split("\x01", 1)[0]
        out.append({"function": func, "where": f"{file.rsplit('/', 1)[-1]}:{line}", "self_s": round(t, 6)})
    return out


class Profiling(Middleware):
    """pyinstrument profiles of the jobs chosen by settings or ``@task(profile=True)``."""

    task_options = {"profile": "True to store a pyinstrument profile of every job of this task"}
    report_keys = ("profile",)
    artifacts = ("profile",)

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.patterns = split_patterns(getattr(settings, "profile", ""))

    def wanted(self, job: JobContext) -> bool:
        """Profile this job? (a settings pattern matches its path, or its task says so)"""
        return self.applies(job.path)

    def applies(self, path: str) -> bool:
        return chosen(path, self.patterns, "profile")

    def on_worker_start(self, worker: Any) -> None:
        """With profiling chosen (a pattern, or a served task's ``profile=True``), import
        pyinstrument now: its first sample would otherwise import it inside the first
        profiled job (about 15 ms of it, measured)."""
        if self.patterns or declared("profile"):
            import pyinstrument.low_level.stat_profile  # noqa: F401
            import pyinstrument.session  # noqa: F401

    def before_job(self, job: JobContext) -> None:
        if not self.wanted(job):
            return
        global _sampler
        if _sampler is None:
            _sampler = GreenletSampler()
        s = _sampler.add(_getcurrent())
        # where the job's own code starts: the caller of the chain (the stem above is trimmed)
        s.start_stack = build_stack(sys._getframe(2), "initial")
        job.state["profiling"] = True

    def after_job(self, job: JobContext, outcome: Any) -> None:
        if not job.state.pop("profiling", False) or _sampler is None:
            return
        s = _sampler.remove(_getcurrent())
        if s is None:
            return
        session = session_of(s, f"job {job.job_id} ({job.path})", _sampler.interval_s)
        job.report["profile"] = {"duration_s": round(session.duration, 6), "samples": session.sample_count,
                                 "interval_s": _sampler.interval_s, "top": top_functions(session),
                                 "note": "this job's greenlet only; waits shown as "
                                         "[waiting: greenlet switched out] frames"}
        job.store_artifact("profile", encode_session(session))

    def describe(self, job: Job) -> Rows:
        prof = (job.report or {}).get("profile")
        if not prof:
            return []
        most = "; most self time:" if prof["top"] else " (too short for a sample)"
        rows = [("profile", f"{prof['samples']} samples over {fmt_seconds(prof['duration_s'])}{most}")]
        for f in prof["top"][:5]:
            rows.append(("", f"{fmt_seconds(f['self_s']):>9}  {f['function']}  {f['where']}"))
        return rows

    def render_artifact(self, name: str, data: str, html: bool = False) -> str:
        session = decode_session(data)
        return render_html(session) if html else render_text(session)

    def load_artifact(self, name: str, data: str) -> Any:
        return decode_session(data)
