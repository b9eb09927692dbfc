"""The job a greenlet is running, in a ContextVar, and what a task can ask of it.

Each greenlet has its own context (gevent copies nothing by default), so ``current_job``
is per job even with many jobs interleaving in one process.

:class:`JobContext` is also the one seam between the core and middleware: middleware
record what they measured in ``report`` (under their own key), store larger blobs with
:meth:`JobContext.store_artifact`, add to the producer's ``meta`` with
:meth:`JobContext.set_meta`, tag log lines through ``log_fields``, and keep their own
per-job state in ``state`` (each under its own key). The core stores ``report``,
``artifacts``, ``logs``, ``progress`` and a changed ``meta`` with the job's outcome and
reads nothing else.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .errors import TaskQueueError
from .job import utf8_safe

#: How a worker writes a running job's progress: (job id, fields as strings).
ProgressWriter = Callable[[str, dict[str, str]], None]


@dataclass
class JobContext:
    """What the running job knows about itself, and what middleware measured of it.

    ``report`` is stored with the job (JSON, size-capped); ``logs`` are the lines captured
    while it ran; ``meta`` is what producer middleware attached at enqueue (trace context).
    Times are UNIX seconds. ``write`` stores progress (None in run_task).
    """

    job_id: str
    path: str
    queue: str
    attempt: int
    params: dict[str, Any]
    interval_s: float = 0.5
    write: ProgressWriter | None = None
    retries: int = 0
    due_at: float | None = None
    #: when this attempt began running in the worker, before any middleware hook (UNIX
    #: seconds, the worker's clock): the job's ``started_at``; its wait is started_at - due_at
    started_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: why it waited in the worker after its claim, when it did: "busy" (every greenlet
    #: taken), "exclusive" (a job that runs alone held the pool, or the pool drained for
    #: this one); None when it started at once
    wait_reason: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    #: named blobs stored with the job beside its report (a profile...): name -> text
    artifacts: dict[str, str] = field(default_factory=dict)
    #: ``key=value`` pairs appended to every log line of the job (the trace ids...)
    log_fields: dict[str, str] = field(default_factory=dict)
    #: per-job state of middleware, each under a key of its own
    state: dict[str, Any] = field(default_factory=dict)
    #: how many before-hooks ran (the after-hooks of the others are skipped)
    entered: int = 0
    #: ``meta`` changed while the job ran: it is stored with the outcome
    meta_changed: bool = False
    progress: float | None = None
    progress_message: str | None = None
    #: last progress write (monotonic); starts at creation, so a job shorter than
    #: ``interval_s`` never writes progress on its own: it goes with the job's outcome
    _written_at: float = field(default_factory=time.monotonic, repr=False)

    @property
    def wait_s(self) -> float | None:
        """Seconds from due to started, as the job's document gives them (its started_at
        is stored to the microsecond); None before the attempt began."""
        if self.started_at is None or self.due_at is None:
            return None
        return round(max(0.0, round(self.started_at, 6) - self.due_at), 6)

    def store_artifact(self, name: str, data: str) -> None:
        """Store ``data`` (text, e.g. base64) with the job under ``name``; a middleware that
        stores one renders it too (``Middleware.render_artifact``)."""
        self.artifacts[name] = data

    def set_meta(self, key: str, value: Any) -> None:
        """Set ``meta[key]`` (JSON) for the job's next attempts; stored with this outcome."""
        self.meta[key] = value
        self.meta_changed = True

    def progress_fields(self) -> dict[str, str]:
        """The progress fields to store (strings), empty when no progress was set."""
        out = {}
        if self.progress is not None:
            out["progress"] = repr(self.progress)
        if self.progress_message is not None:
            out["progress_message"] = self.progress_message
        return out


current_job: ContextVar[JobContext | None] = ContextVar("runtime_current_job", default=None)


def set_progress(fraction: float, message: str | None = None) -> None:
    """Record the running job's progress: ``fraction`` in [0, 1] and an optional message.

    Writes to the job store at most once per ``progress_interval_s`` (0.5 s by default), and
    always at the job's end, so a tight loop does not flood Redis. Outside a job it does
    nothing. Raises TaskQueueError for a fraction outside [0, 1].
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise TaskQueueError(f"progress fraction must be within [0, 1], got {fraction!r}")
    ctx = current_job.get()
    if ctx is None:
        return
    ctx.progress = float(fraction)
    if message is not None:
        ctx.progress_message = utf8_safe(str(message)[:1000])
    now = time.monotonic()
    if ctx.write is not None and now - ctx._written_at >= ctx.interval_s:
        ctx._written_at = now
        ctx.write(ctx.job_id, ctx.progress_fields())


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``gevent.spawn`` that runs ``fn`` in a copy of the caller's context, so a greenlet a
    task starts keeps the job (``current_job``, its trace span, its log capture). A plain
    ``gevent.spawn`` starts with an empty context: its spans would be orphan traces and its
    Sentry events would lose the job's tags."""
    import gevent
    return gevent.spawn(contextvars.copy_context().run, fn, *args, **kwargs)
