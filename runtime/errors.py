"""The one exception root of runtime, and the interrupts that pierce a task's handlers.

Every error runtime raises on purpose derives from :class:`TaskQueueError` (named so as not
to shadow the builtin ``RuntimeError``). The interrupts delivered into a running job
(:class:`JobTimeout`, :class:`JobAborted`, :class:`JobInterrupt`) derive from
``BaseException`` so that a task's ``except Exception:`` cannot swallow them (the same
choice as Dramatiq's ``Interrupt``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``runtime`` command and of worker processes (Dramatiq's ``RET_*``)."""

    OK = 0
    ERROR = 1            #: any other runtime error
    USAGE = 2            #: bad arguments, params or settings: a supervisor does not restart it
    NOT_FOUND = 3        #: no such job, queue or schedule (or artifact of a job)
    UNAVAILABLE = 4      #: Redis or MongoDB unreachable
    JOB_FAILED = 5       #: ``run``, ``enqueue --wait``: the job did not succeed
    TIMEOUT = 6          #: ``enqueue --wait`` deadline passed
    NOT_ALLOWED = 7      #: not allowed now: a status change the transition table forbids, ...
    RECYCLED = 8         #: a worker process stopped to be recycled; its supervisor replaces it


class TaskQueueError(Exception):
    """Root of every error runtime raises on purpose."""


class ConfigError(TaskQueueError):
    """A setting is missing or invalid (bad URL, unknown option, bad unit)."""


class BrokerUnavailable(TaskQueueError):
    """Redis cannot be reached; the message names the URL and the cause."""


class StoreUnavailable(BrokerUnavailable):
    """The MongoDB job store cannot be reached; the message names the cause. (A kind of
    BrokerUnavailable, so callers and the CLI's exit code 4 treat both outages alike.)"""


class InvalidParams(TaskQueueError):
    """Params are not a JSON object, are too large, or do not bind to the task signature.

    ``key`` is the path of the offending value (``params['when']``), when there is one.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class JobTooLarge(InvalidParams):
    """The encoded job document is over ``Settings.max_job_bytes``."""


class TaskError(TaskQueueError):
    """A path names no task this process can run.

    ``elsewhere`` is True when another process may run it: the path is outside this
    process's ``task_modules``, or its module or attribute is missing from this code (in
    a rolling deploy, an old worker sees the new tasks' jobs). A worker hands such a job
    back to its queue instead of failing it (runtime.worker.unserved).
    """

    def __init__(self, message: str, elsewhere: bool = False) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere


class BadDocument(TaskError):
    """A claimed job's document in Redis cannot be read (a field that is not a number, a
    missing field, meta that is not JSON, bytes that are not UTF-8): that job ends
    ``failed`` with reason ``bad-document`` and this message says what was wrong."""


class TaskNotFound(TaskError):
    """The task path does not name an importable function or class (or its module failed
    to import: the import's exception is the ``__cause__``)."""


class TaskNotAllowed(TaskError):
    """The task path is outside the configured ``task_modules`` (nothing was imported), or
    names something that is not a task: a function or class imported into a task module
    rather than defined there (and not marked ``@task``), or a private name."""


class TaskNotServed(TaskError):
    """No worker served the job's task within ``unserved_timeout_s`` (each worker that
    claimed it handed it back: outside its task_modules, or missing from its code)."""


class NotTheOwner(ConfigError):
    """The MongoDB collection of job documents belongs to another deployment (another
    Redis or key prefix: runtime.store.mongo.deployment); exit code 2 like any ConfigError."""


class TaskImportError(ConfigError):
    """A configured task module does not exist or failed to import (checked at worker
    start and by ``runtime check``). ``traceback`` is the import's traceback, or "" for
    a module that does not exist."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class TaskOptionError(TaskQueueError, TypeError):
    """A task declares an option nobody understands (raised at import, with a hint)."""


class MiddlewareError(TaskQueueError):
    """A middleware's before-hook raised; the job fails with this (cause chained)."""


class ResultNotJSON(TaskQueueError):
    """A task returned a value that cannot be stored as JSON."""


class JobNotFound(TaskQueueError, KeyError):
    """No job with this id exists (never queued, or its TTL expired)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "job not found"


class ScheduleNotFound(TaskQueueError, KeyError):
    """No schedule of this name was ever run by a scheduler (exit code NOT_FOUND)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "schedule not found"


class ScheduleRefused(TaskQueueError):
    """Not allowed for this schedule now (exit code NOT_ALLOWED): forgetting one that a
    live scheduler still runs, running now one removed from the code."""


class InvalidTransition(TaskQueueError):
    """The requested status change is not allowed from the job's current status."""


class WaitTimeout(TaskQueueError, TimeoutError):
    """``wait()`` reached its deadline; ``pending`` lists the ids not yet final."""

    def __init__(self, message: str, pending: list[str]) -> None:
        super().__init__(message)
        self.pending = pending


class Retry(TaskQueueError):
    """Raise from a task to ask for a retry, optionally after ``delay_s`` seconds.

    Counts against the task's ``max_retries``; past it the job ends ``maxretries``.
    """

    def __init__(self, message: str = "retry requested", delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class JobInterrupt(BaseException):
    """Delivered into a running job at shutdown or recycle: the job is requeued at once
    with status ``interrupt`` and its retry count untouched."""


class JobTimeout(BaseException):
    """Delivered into a running job that exceeded its ``timeout_s``: status ``timeout``."""


class JobAborted(BaseException):
    """Delivered into a running job that was aborted (``runtime abort``): status ``abort``."""


class HardTimeout(TaskQueueError):
    """A job ran past its hard deadline (its timeout plus runtime.watch.HARD_GRACE_S)
    without yielding: its worker's watchdog killed the worker process, and the job ended
    ``timeout`` with reason ``hard-timeout`` (the type named in its ``exc_type``)."""
