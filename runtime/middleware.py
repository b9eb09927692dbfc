"""The middleware protocol: one set of hooks that every cross-cutting feature plugs into.

Tracing, timing, logs, profiles, memory, Sentry and metrics are each a
:class:`Middleware` (most in the ``diagnostics`` package); the worker loop and
``run_task`` call the :class:`Chain` and import none of them. Users add their own by
dotted path in ``Settings.middleware`` (``RUNTIME_MIDDLEWARE``).

Order: before-hooks run in the configured order, after-hooks in reverse. A before-hook
that raises fails the job (status failed, reason ``middleware``, the traceback points at
the hook) and the after-hooks of the middleware already entered still run; the job never
stays started. Any other hook that raises is logged with the middleware's name and the
job ends with the status it had (the hook cannot lose it).

Middleware declare the task options they understand in ``task_options``; ``@task``
rejects any other option at import with a hint (runtime.tasks).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from .errors import ConfigError, TaskQueueError
from .tasks import register_task_options, resolved

if TYPE_CHECKING:
    from .broker import NewJob
    from .context import JobContext
    from .execution import AttemptResult

log = logging.getLogger("runtime.middleware")


class MiddlewareError(TaskQueueError):
    """A middleware's before-hook raised; the job fails with this (cause chained)."""


class Middleware:
    """Hooks around jobs and workers; every hook here does nothing. Subclass and override.

    ``job`` is the running job's :class:`~runtime.context.JobContext` (``job.report`` is
    the dict stored with the job; put your measurements there under your own key).
    """

    #: task options this middleware understands: name -> meaning (shown in error hints)
    task_options: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.task_options:
            register_task_options(cls.task_options)

    @property
    def name(self) -> str:
        return type(self).__qualname__

    def on_worker_start(self, worker: Any) -> None:
        """In the worker process, after fork, before the first claim (and once per process
        before the first ``run_task``, with ``worker`` None)."""

    def on_worker_stop(self, worker: Any) -> None:
        """In the worker process, after the last job was recorded (flush exporters here)."""

    def before_enqueue(self, message: "NewJob") -> None:
        """In the producer, before a job is queued; may add to ``message.meta`` (JSON)."""

    def exclusive(self, job: "JobContext") -> bool:
        """True to run this job alone in its worker: the pool drains first, and refills
        after it (for process-wide measurements such as heap diffs)."""
        return False

    def applies(self, path: str) -> bool:
        """False when this middleware has nothing to do for any job of the task at ``path``
        in this process (say, tracing with no exporter, profiling of other tasks): then
        none of its job hooks is called for them. Asked once per task path after
        ``on_worker_start`` (the answer is kept), so it must not depend on the job."""
        return True

    def before_job(self, job: "JobContext") -> None:
        """In the job's greenlet, before the task runs."""

    def after_job(self, job: "JobContext", outcome: "AttemptResult") -> None:
        """In the job's greenlet, after the task ended (``outcome.status``, ``.result``,
        ``.exc``), however it ended."""


def _overrides(m: Middleware, hook: str) -> bool:
    return getattr(type(m), hook) is not getattr(Middleware, hook)


class Chain:
    """Calls the hooks of a list of middleware; only the hooks they override are called."""

    def __init__(self, items: Iterable[Middleware] = ()) -> None:
        self.items = list(items)
        self._before = [m for m in self.items if _overrides(m, "before_job")]
        self._after = [m for m in self.items if _overrides(m, "after_job")]
        self._enqueue = [m for m in self.items if _overrides(m, "before_enqueue")]
        self._exclusive = [m for m in self.items if _overrides(m, "exclusive")]
        #: task path -> (before, after, exclusive) middleware that apply to its jobs
        self._plans: dict[str, tuple[list[Middleware], list[Middleware], list[Middleware]]] = {}

    def _plan(self, path: str) -> tuple[list[Middleware], list[Middleware], list[Middleware]]:
        plan = self._plans.get(path)
        if plan is None:
            keep = set()
            for m in self.items:
                try:
                    if m.applies(path):
                        keep.add(id(m))
                except Exception:  # noqa: BLE001 - when in doubt, its hooks run
                    log.exception("middleware %s.applies raised", m.name)
                    keep.add(id(m))
            plan = ([m for m in self._before if id(m) in keep], [m for m in self._after if id(m) in keep],
                    [m for m in self._exclusive if id(m) in keep])
            if resolved(path) and len(self._plans) < 10_000:  # its task options are known
                self._plans[path] = plan
        return plan

    @classmethod
    def from_settings(cls, settings: Any) -> "Chain":
        """Instantiate ``package.module.Class(settings)`` for each path in
        ``settings.middleware``. Raises ConfigError."""
        return cls(load_middleware(p)(settings) for p in settings.middleware)

    def __bool__(self) -> bool:
        return bool(self.items)

    def before_job(self, job: "JobContext") -> int:
        """Run the before-hooks in order; returns how many ran. Raises MiddlewareError."""
        before = self._plan(job.path)[0]
        for i, m in enumerate(before):
            try:
                m.before_job(job)
            except Exception as exc:  # noqa: BLE001
                job.entered = i
                raise MiddlewareError(f"middleware {m.name}.before_job raised "
                                      f"{type(exc).__name__}: {exc}") from exc
        job.entered = len(before)
        return job.entered

    def after_job(self, job: "JobContext", outcome: "AttemptResult") -> None:
        """Run the after-hooks in reverse order (of the middleware whose before-hook ran,
        and of those without one); log any that raises."""
        before, after, _ = self._plan(job.path)
        n = job.entered
        skip = () if n >= len(before) else set(map(id, before[n:]))
        for m in reversed(after):
            if skip and id(m) in skip:
                continue
            try:
                m.after_job(job, outcome)
            except Exception:  # noqa: BLE001 - a hook cannot lose the job
                log.exception("middleware %s.after_job raised (job %s keeps status %s)",
                              m.name, job.job_id, outcome.status.value)

    def exclusive(self, job: "JobContext") -> bool:
        """Does any middleware want ``job`` to run alone? (a raising hook says no, logged)"""
        for m in self._plan(job.path)[2]:
            try:
                if m.exclusive(job):
                    return True
            except Exception:  # noqa: BLE001
                log.exception("middleware %s.exclusive raised", m.name)
        return False

    def before_enqueue(self, message: "NewJob") -> None:
        for m in self._enqueue:
            m.before_enqueue(message)  # a producer-side error refuses the enqueue: raise

    def call(self, hook: str, *args: Any) -> None:
        """Run a worker-level hook (``on_worker_start``/``on_worker_stop``); log errors.

        on_worker_start runs in order, on_worker_stop in reverse."""
        self._plans.clear()  # what applies may change as middleware start or stop
        items = self.items if hook != "on_worker_stop" else list(reversed(self.items))
        for m in items:
            if not _overrides(m, hook):
                continue
            try:
                getattr(m, hook)(*args)
            except Exception:  # noqa: BLE001
                log.exception("middleware %s.%s raised", m.name, hook)


def load_middleware(path: str) -> type[Middleware]:
    """The Middleware subclass at dotted ``path``. Raises ConfigError with the reason."""
    module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load middleware {path!r}: {exc}") from None
    if not (isinstance(target, type) and issubclass(target, Middleware)):
        raise ConfigError(f"middleware {path!r} is not a subclass of runtime.middleware.Middleware")
    return target
