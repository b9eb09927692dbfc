"""Run one attempt of a job and map how it ended to a status (the one place that does).

Used by the worker (in a greenlet) and by ``run_task`` (in the caller's thread). Every way
an attempt can end, a return, an exception, or a BaseException delivered into it, maps to
exactly one :class:`~runtime.status.Status`:

| how it ended                                   | status                  | reason       |
|------------------------------------------------|-------------------------|--------------|
| returned a JSON value                          | success                 |              |
| returned something not JSON                    | failed                  | bad-result   |
| unknown / disallowed path, params not matching | failed (never retried)  | bad-task / bad-params |
| (in a worker) a task it does not serve         | retry, not counted; failed past unserved_timeout_s | unserved |
| raised Retry, or an exception it retries on    | retry, or maxretries past max_retries | |
| raised any other exception                     | failed                  | exception    |
| JobTimeout (its timeout_s passed)              | timeout                 |              |
| JobAborted (runtime abort)                     | abort                   |              |
| JobInterrupt / GreenletExit (shutdown, recycle) | interrupt (requeued)   |              |
| SystemExit, KeyboardInterrupt inside the task  | failed                  | exception    |
"""

from __future__ import annotations

import time
import traceback as tb
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from .errors import (
    InvalidParams,
    JobAborted,
    JobInterrupt,
    JobTimeout,
    ResultNotJSON,
    Retry,
    TaskNotAllowed,
    TaskNotFound,
)
from .job import encode_result, loads
from .settings import Settings
from .status import Status
from .tasks import TaskSpec, resolve

MAX_TRACEBACK_CHARS = 32_000


def exc_type_name(exc: BaseException) -> str:
    """The exception's qualified class name, without ``builtins.`` ("ValueError",
    "runtime.errors.JobTimeout"): the job's ``exc_type``, the metrics' ``error.type``."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}".removeprefix("builtins.")


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's ``__str__`` itself raises."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - a broken __str__ must not lose the job
        return f"<{type(exc).__name__} whose str() raised>"


def format_traceback(exc: BaseException) -> str:
    try:
        text = "".join(tb.format_exception(exc))
    except BaseException:  # noqa: BLE001
        text = f"{type(exc).__name__}: {safe_str(exc)}\n(traceback could not be formatted)"
    if len(text) > MAX_TRACEBACK_CHARS:
        cut = len(text) - MAX_TRACEBACK_CHARS
        text = text[:2000] + f"\n... [{cut} chars cut] ...\n" + text[-(MAX_TRACEBACK_CHARS - 2000):]
    return text


def release(exc: BaseException | None) -> None:
    """Free what ``exc`` holds once it is stored: the locals of the frames it was raised
    through (cleared) and its traceback, and those of the exceptions it chains.

    An exception's traceback holds the frames it passed, a frame the caller's frame, and
    the caller holds the exception (in the attempt's result): a reference cycle, which
    only the cyclic gc frees, and rarely (measured: 100 attempts failing with a 50 MiB
    local each grew a worker by 5 GiB with gc off; by ~1 GiB with it on)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            tb.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
        release(exc.__cause__)
        exc = exc.__context__


@dataclass
class AttemptResult:
    """How one attempt ended: status, result (JSON text) or error, retry delay (s)."""

    status: Status
    result_json: str | None = None
    result: Any = None
    exc: BaseException | None = None
    reason: str | None = None
    delay_s: float = 0.0
    note: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    #: a retry counts against the task's max_retries (a job handed back unserved does not)
    counted: bool = True
    #: the task's own run, seconds: finding it, binding its params and the call (what
    #: ``report["timing"]["wall_s"]`` and the duration metric give); None when it did not run
    call_s: float | None = None

    def store_fields(self, retries: int) -> dict[str, str]:
        """The job fields to write for this outcome (strings)."""
        out = dict(self.fields)
        if self.result_json is not None:
            out["result"] = self.result_json
        if self.exc is not None:
            out["exc_type"] = exc_type_name(self.exc)
            out["exc_message"] = safe_str(self.exc)[:4000]
            out["traceback"] = format_traceback(self.exc)
        if self.reason:
            out["reason"] = self.reason
        if self.status == Status.RETRY and self.counted:
            out["retries"] = str(retries + 1)
        return out


def interrupted(exc: BaseException) -> AttemptResult:
    """How an attempt ended when ``exc`` was delivered outside the task (in a hook)."""
    if isinstance(exc, JobTimeout):
        return AttemptResult(Status.TIMEOUT, exc=exc, reason="timeout")
    if isinstance(exc, JobAborted):
        return AttemptResult(Status.ABORT, exc=exc, reason="aborted")
    if isinstance(exc, JobInterrupt):
        return AttemptResult(Status.INTERRUPT, exc=exc, reason="interrupted", note="interrupted, requeued")
    return AttemptResult(Status.FAILED, exc=exc, reason="exception")


def _retry_or_max(spec: TaskSpec | None, exc: BaseException, retries: int, delay_s: float | None) -> AttemptResult:
    max_retries = spec.max_retries if spec else 0
    if retries < max_retries:
        delay = delay_s if delay_s is not None else (spec.retry_delay_s(retries) if spec else 1.0)
        return AttemptResult(Status.RETRY, exc=exc, delay_s=delay,
                             note=f"retry {retries + 1}/{max_retries} in {delay:.3f} s")
    return AttemptResult(Status.MAXRETRIES, exc=exc, reason="max-retries",
                         note=f"no retries left ({max_retries} allowed)")


def run_attempt(settings: Settings, path: str, params: dict[str, Any] | str, retries: int,
                enforce_timeout: bool = True) -> AttemptResult:
    """Run ``path`` with ``params`` once and classify the end (never raises, see table);
    the result's ``call_s`` is how long that took.

    The timeout (the task's ``timeout_s``, else ``settings.default_timeout_s``; none for a
    task that declares ``timeout_s=None``) is enforced
    with ``gevent.Timeout``, which fires only when the task yields to the gevent hub.
    """
    began = time.perf_counter()
    result = _attempt(settings, path, params, retries, enforce_timeout)
    result.call_s = time.perf_counter() - began
    return result


def call_frame_code() -> CodeType:
    """The code of the frame that calls a task: every frame inside it is the task's
    (runtime.worker.signals interrupts only there)."""
    return _attempt.__code__


def _attempt(settings: Settings, path: str, params: dict[str, Any] | str, retries: int,
             enforce_timeout: bool) -> AttemptResult:
    spec: TaskSpec | None = None
    try:
        spec = resolve(path, settings.task_modules)
        call = spec.bind(loads(params) if isinstance(params, str) else params)
        limit = spec.limit(settings.default_timeout_s)
        if enforce_timeout and limit is not None:
            import gevent
            began = time.monotonic()
            with gevent.Timeout(limit, JobTimeout(f"timed out after {limit} s")):
                result = call()
            ran = time.monotonic() - began
            if ran > limit:  # it never yielded, so the timeout could not fire: still over it
                raise JobTimeout(f"ran {ran:.1f} s, past its timeout of {limit} s, without yielding "
                                 f"to the gevent hub; its result is discarded")
        else:
            result = call()
        return AttemptResult(Status.SUCCESS, result_json=encode_result(result, settings.max_job_bytes),
                             result=result)
    except Retry as exc:
        return _retry_or_max(spec, exc, retries, exc.delay_s)
    except (TaskNotFound, TaskNotAllowed) as exc:
        return AttemptResult(Status.FAILED, exc=exc, reason="bad-task")
    except InvalidParams as exc:
        return AttemptResult(Status.FAILED, exc=exc, reason="bad-params")
    except ResultNotJSON as exc:
        return AttemptResult(Status.FAILED, exc=exc, reason="bad-result")
    except JobTimeout as exc:
        return AttemptResult(Status.TIMEOUT, exc=exc, reason="timeout")
    except JobAborted as exc:
        return AttemptResult(Status.ABORT, exc=exc, reason="aborted")
    except JobInterrupt as exc:
        return AttemptResult(Status.INTERRUPT, exc=exc, reason="interrupted",
                             note="interrupted, requeued")
    except Exception as exc:  # noqa: BLE001 - every task error ends in a status
        if spec is not None and spec.should_retry(exc):
            return _retry_or_max(spec, exc, retries, None)
        return AttemptResult(Status.FAILED, exc=exc, reason="exception")
    except BaseException as exc:  # noqa: BLE001 - GreenletExit, SystemExit, KeyboardInterrupt
        # runtime delivers its own interrupts (above); a GreenletExit here was raised by the
        # task itself (or a kill runtime did not send), so it is the task's failure
        return AttemptResult(Status.FAILED, exc=exc, reason="exception")
