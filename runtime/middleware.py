"""The middleware protocol: one set of hooks that every cross-cutting feature plugs into.

Tracing, timing, logs, profiles, memory, Sentry and metrics are each a
:class:`Middleware` (most in the ``diagnostics`` package); the worker loop and
``run_task`` call the :class:`Chain` and import none of them. Users add their own by
dotted path in ``Settings.middleware`` (``RUNTIME_MIDDLEWARE``).

Order: before-hooks run in the configured order, after-hooks in reverse. A middleware
that needs another's hook to have run first says so (``runs_after`` / ``runs_before``,
dotted paths); a configured order that breaks such a rule is refused at start
(ConfigError naming both). A before-hook that raises fails the job (status failed, reason
``middleware``, the traceback points at the hook) and the after-hooks of the middleware
already entered still run; the job never stays started. Any other hook that raises is
logged with the middleware's name and the job ends with the status it had.

Middleware declare the task options they understand in ``task_options``; ``@task``
rejects any other option at import with a hint (runtime.tasks). What a middleware
measured goes in the job's report under its own key (``report_keys``), larger blobs in
artifacts (``artifacts``); it renders both itself (:meth:`Middleware.describe`,
:meth:`Middleware.render_artifact`) for the CLI and any other reader, so the core knows no
diagnostic by name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .context import JobContext
from .errors import ConfigError, MiddlewareError
from .execution import AttemptResult, interrupted, run_attempt
from .status import Status
from .tasks import register_task_options, resolved

if TYPE_CHECKING:
    from .catalog import Served
    from .job import Job
    from .messages import NewJob
    from .settings import Settings

log = logging.getLogger("runtime.middleware")


class WorkerView(Protocol):
    """What ``on_worker_start``/``on_worker_stop`` learn of the worker: its registry id, its
    settings and the queue depths of its queues ({queue: {"ready": n, "delayed": n}})."""

    id: str
    settings: Settings

    def queue_depths(self) -> dict[str, dict[str, int]]: ...


#: A section of ``runtime job``: (label, text) rows; label "" continues the row above.
Rows = list[tuple[str, str]]


class Middleware:
    """Hooks around jobs and workers; every hook here does nothing. Subclass and override.

    ``job`` is the running job's :class:`~runtime.context.JobContext` (``job.report`` is
    the dict stored with the job; put your measurements there under your own key).
    """

    #: task options this middleware understands: name -> meaning (shown in error hints)
    task_options: ClassVar[dict[str, str]] = {}
    #: middleware (dotted paths) that must come before this one when configured: their
    #: before-hooks have run when this one's runs (e.g. it reads what they set)
    runs_after: ClassVar[tuple[str, ...]] = ()
    #: middleware that must come after this one when configured: their after-hooks have
    #: run when this one's runs (after-hooks run in reverse order)
    runs_before: ClassVar[tuple[str, ...]] = ()
    #: keys of ``job.report`` this middleware writes (and :meth:`describe` shows)
    report_keys: ClassVar[tuple[str, ...]] = ()
    #: names of the artifacts it stores (and :meth:`render_artifact` renders)
    artifacts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.task_options:
            register_task_options(cls.task_options)

    @property
    def name(self) -> str:
        return type(self).__qualname__

    @classmethod
    def path(cls) -> str:
        """The dotted path of this class, as ``Settings.middleware`` names it."""
        return f"{cls.__module__}.{cls.__qualname__}"

    def on_check(self, served: Served) -> list[str]:
        """When a worker is built, before it registers or claims anything, and in
        ``runtime check``: raise ConfigError (one line) for what this middleware cannot
        run with the tasks of ``served`` (the scheduler: a bad schedule), so that the
        worker is refused at start (exit code 2). Returns lines for ``runtime check`` to
        show (what it found), or []."""
        return []

    def on_worker_start(self, worker: WorkerView | None) -> None:
        """In the worker process, after fork, before the first claim (and once per process
        before the first ``run_task``, with ``worker`` None)."""

    def on_worker_recycle(self, worker: WorkerView | None) -> None:
        """The worker begins to recycle: its replacement starts now, beside it, while it
        drains (give up what the replacement takes over, as a listening port)."""

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        """In the worker process, after the last job was recorded (flush exporters here)."""

    def before_enqueue(self, message: NewJob) -> None:
        """In the producer, before a job is queued; may add to ``message.meta`` (JSON)."""

    def after_enqueue(self, messages: Sequence[NewJob], error: BaseException | None) -> None:
        """In the producer, once per batch of ``messages`` whose before_enqueue ran: after
        Redis took them (``error`` None), or when queueing them failed (``error``, which
        is raised to the caller after this)."""

    def exclusive(self, job: JobContext) -> bool:
        """True to run this job alone in its worker: the pool drains first, and refills
        after it (for process-wide measurements such as heap diffs)."""
        return False

    def applies(self, path: str) -> bool:
        """False when this middleware has nothing to do for any job of the task at ``path``
        in this process (say, tracing with no exporter, profiling of other tasks): then
        none of its job hooks is called for them. Asked once per task path after
        ``on_worker_start`` (the answer is kept), so it must not depend on the job."""
        return True

    def before_job(self, job: JobContext) -> None:
        """In the job's greenlet, before the task runs."""

    def after_job(self, job: JobContext, outcome: AttemptResult) -> None:
        """In the job's greenlet, after the task ended (``outcome.status``, ``.result``,
        ``.exc``), however it ended."""

    def describe(self, job: Job) -> Rows:
        """The rows ``runtime job`` (and any other reader) shows for what this middleware
        stored in ``job.report`` under its ``report_keys``; [] for nothing to show."""
        return []

    def render_artifact(self, name: str, data: str, html: bool = False) -> str:
        """One of its ``artifacts`` as text (or HTML) for a person to read; by default the
        text as stored (escaped in a ``<pre>`` for HTML)."""
        if html:
            import html as escape
            return f"<!DOCTYPE html>\n<pre>{escape.escape(data)}</pre>\n"
        return data

    def load_artifact(self, name: str, data: str) -> Any:
        """One of its ``artifacts`` as the object it was made from (for a REPL)."""
        return data


def _overrides(m: Middleware, hook: str) -> bool:
    return getattr(type(m), hook) is not getattr(Middleware, hook)


def check_order(items: Sequence[Middleware]) -> None:
    """Raise ConfigError when a middleware's ``runs_after``/``runs_before`` rule is broken
    by the order of ``items`` (only middleware present are looked at)."""
    where = {type(m).path(): i for i, m in enumerate(items)}
    for i, m in enumerate(items):
        for other in m.runs_after:
            if other in where and where[other] > i:
                raise ConfigError(f"middleware {type(m).path()} must come after {other} in the middleware "
                                  f"setting (it needs {other}'s before_job to have run)")
        for other in m.runs_before:
            if other in where and where[other] < i:
                raise ConfigError(f"middleware {type(m).path()} must come before {other} in the middleware "
                                  f"setting (it needs {other}'s after_job to have run)")


_Plan = tuple[list[Middleware], list[Middleware], list[Middleware]]


class Chain:
    """Calls the hooks of a list of middleware; only the hooks they override are called.

    Raises ConfigError when the list breaks an ordering rule (:func:`check_order`)."""

    def __init__(self, items: Iterable[Middleware] = ()) -> None:
        self.items = list(items)
        check_order(self.items)
        self._before = [m for m in self.items if _overrides(m, "before_job")]
        self._after = [m for m in self.items if _overrides(m, "after_job")]
        self.enqueue_hooks = [m for m in self.items if _overrides(m, "before_enqueue")]
        self.enqueued_hooks = [m for m in self.items if _overrides(m, "after_enqueue")]
        self.exclusive_hooks = [m for m in self.items if _overrides(m, "exclusive")]
        #: task path -> (before, after, exclusive) middleware that apply to its jobs
        self._plans: dict[str, _Plan] = {}

    def _plan(self, path: str) -> _Plan:
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
                    [m for m in self.exclusive_hooks if id(m) in keep])
            if resolved(path) and len(self._plans) < 10_000:  # its task options are known
                self._plans[path] = plan
        return plan

    @classmethod
    def from_settings(cls, settings: Settings) -> Chain:
        """Instantiate ``package.module.Class(settings)`` for each path in
        ``settings.middleware``. Raises ConfigError."""
        return cls(load_middleware(p)(settings) for p in settings.middleware)

    def __bool__(self) -> bool:
        return bool(self.items)

    def before_job(self, job: JobContext) -> int:
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

    def after_job(self, job: JobContext, outcome: AttemptResult) -> None:
        """Run the after-hooks in reverse order (of the middleware whose before-hook ran,
        and of those without one); log any that raises."""
        before, after, _ = self._plan(job.path)
        n = job.entered
        skip = set() if n >= len(before) else set(map(id, before[n:]))
        for m in reversed(after):
            if skip and id(m) in skip:
                continue
            try:
                m.after_job(job, outcome)
            except Exception:  # noqa: BLE001 - a hook cannot lose the job
                log.exception("middleware %s.after_job raised (job %s keeps status %s)",
                              m.name, job.job_id, outcome.status.value)

    def run_attempt(self, job: JobContext, settings: Settings, params: dict[str, Any] | str,
                    enforce_timeout: bool = True) -> AttemptResult:
        """:func:`~runtime.execution.run_attempt` of ``job`` wrapped in the before/after
        hooks. A before-hook that raises fails the attempt (reason ``middleware``); a kill
        delivered while a hook runs still ends the attempt in its status (never raises)."""
        try:
            try:
                self.before_job(job)
            except MiddlewareError as exc:
                result = AttemptResult(Status.FAILED, exc=exc, reason="middleware")
            else:
                result = run_attempt(settings, job.path, params, job.retries, enforce_timeout=enforce_timeout)
            self.after_job(job, result)
        except BaseException as exc:  # noqa: BLE001 - a kill that landed in a hook
            return interrupted(exc)
        return result

    def exclusive(self, job: JobContext) -> bool:
        """Does any middleware want ``job`` to run alone? (a raising hook says no, logged)"""
        for m in self._plan(job.path)[2]:
            try:
                if m.exclusive(job):
                    return True
            except Exception:  # noqa: BLE001
                log.exception("middleware %s.exclusive raised", m.name)
        return False

    def before_enqueue(self, message: NewJob) -> None:
        for m in self.enqueue_hooks:
            m.before_enqueue(message)  # a producer-side error refuses the enqueue: raise

    def after_enqueue(self, messages: Sequence[NewJob], error: BaseException | None) -> None:
        """Every middleware's after_enqueue, in reverse order; their errors are logged (the
        jobs are queued, or the caller gets the publish's own error)."""
        for m in reversed(self.enqueued_hooks):
            try:
                m.after_enqueue(messages, error)
            except Exception:  # noqa: BLE001
                log.exception("middleware %s.after_enqueue raised", m.name)

    def check(self, served: Served) -> dict[str, list[str]]:
        """Every middleware's :meth:`Middleware.on_check`, in order: {middleware name:
        its lines}. Raises the first ConfigError (a worker must not start)."""
        return {m.name: m.on_check(served) for m in self.items if _overrides(m, "on_check")}

    def call(self, hook: str, worker: WorkerView | None) -> None:
        """Run a worker-level hook (``on_worker_start``/``on_worker_stop``); log errors.

        on_worker_start runs in order, on_worker_stop in reverse."""
        self._plans.clear()  # what applies may change as middleware start or stop
        items = self.items if hook != "on_worker_stop" else list(reversed(self.items))
        for m in items:
            if not _overrides(m, hook):
                continue
            try:
                getattr(m, hook)(worker)
            except Exception:  # noqa: BLE001
                log.exception("middleware %s.%s raised", m.name, hook)

    def describe(self, job: Job) -> Rows:
        """Every middleware's rows for ``job``, then the report keys none of them claims
        (as JSON)."""
        import json
        rows: Rows = []
        claimed: set[str] = set()
        for m in self.items:
            claimed.update(m.report_keys)
            try:
                rows += m.describe(job)
            except Exception as exc:  # noqa: BLE001 - an old or odd report must not hide the job
                rows.append((m.name, f"cannot be shown: {type(exc).__name__}: {exc}"))
        for key, value in (job.report or {}).items():
            if key not in claimed:
                rows.append((key, json.dumps(value, ensure_ascii=False)[:2000]))
        return rows

    def owner(self, artifact: str) -> Middleware:
        """The middleware that stores ``artifact``. Raises KeyError when no configured one does."""
        for m in self.items:
            if artifact in m.artifacts:
                return m
        raise KeyError(artifact)

    def render_artifact(self, name: str, data: str, html: bool = False) -> str:
        """Artifact ``name`` rendered by the middleware that stores it. Raises KeyError."""
        return self.owner(name).render_artifact(name, data, html)

    def load_artifact(self, name: str, data: str) -> Any:
        """Artifact ``name`` loaded by the middleware that stores it. Raises KeyError."""
        return self.owner(name).load_artifact(name, data)


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
