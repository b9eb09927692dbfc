"""Errors of jobs to Sentry (sentry-sdk): once per failed attempt, in a scope of its own.

Configured by ``Settings.sentry_dsn`` (``--sentry-dsn``) or ``SENTRY_DSN``; without one
this middleware does nothing and imports nothing. The client is created in the worker
process after it starts (never inherited across fork) and flushed when it stops.

- Each job runs in ``sentry_sdk.isolation_scope()``: its tags never leak to another job,
  even with many greenlets (each greenlet has its own contextvars).
- Tags: ``job_id``, ``task``, ``queue``, ``attempt`` and ``otel.trace_id``. Worker-wide
  tags (``worker``, ``queues``) go on the global scope, which job scopes inherit.
- Same trace: when Tracing is on (it must come first), the job's Sentry trace is its
  OpenTelemetry trace (``continue_trace`` from the job span's ids), so the event's
  ``contexts.trace`` names the trace id Jaeger or Tempo shows, and its span.
- Breadcrumbs: the job's captured log lines (diagnostics.logs), the last
  ``max_breadcrumbs`` (sentry-sdk's default, 100), print output as category ``print``.
- Context ``job``: id, task, queue, attempt, status and ``runtime job ID`` to see it; its
  params only with ``sentry_include_params``, values of keys that look secret
  (SECRET_KEYS) replaced by ``***``.
- Reported: attempts that end failed, timeout or maxretries; interrupted ones (a worker
  shutdown cut them off; requeued) as warnings, once per interruption; a job lost with
  its worker (it died) once, as a warning, by the worker whose reaper took it back
  (runtime.worker.reaper). Attempts that will be retried are reported only with
  ``sentry_report_retries``; aborts (asked for) are not errors.
- runtime's own frames (and gevent's) are not in-app: Sentry groups and shows the task's.
- Local variables are sent only with ``sentry_include_locals`` (off by default: PII).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows, WorkerView
from runtime.resets import on_reset
from runtime.status import Status

log = logging.getLogger("runtime.sentry")

_REPORTED = {Status.FAILED, Status.TIMEOUT, Status.MAXRETRIES, Status.INTERRUPT}
#: Modules whose frames are not the user's code (Sentry's ``in_app_exclude``).
NOT_IN_APP = ["runtime", "diagnostics", "gevent", "greenlet"]
#: Param names whose values are masked in the ``job`` context (case-insensitive parts).
SECRET_KEYS = re.compile(r"pass|secret|token|key|auth|cookie|session|credential|signature|dsn", re.I)


def masked_params(params: Any) -> Any:
    """``params`` with the values of secret-looking keys (SECRET_KEYS) replaced by
    ``***``, in nested objects and lists too."""
    if isinstance(params, dict):
        return {k: "***" if SECRET_KEYS.search(str(k)) else masked_params(v) for k, v in params.items()}
    if isinstance(params, list):
        return [masked_params(v) for v in params]
    return params


def breadcrumb(line: str) -> dict[str, Any]:
    """A Sentry breadcrumb of one captured log line ("TIME LEVEL logger: message" or
    "[stdout] text")."""
    if line.startswith(("[stdout] ", "[stderr] ")):
        return {"category": "print", "message": line, "level": "info"}
    parts = line.split(" ", 4)  # date time,ms LEVEL logger: message
    level = parts[2].lower() if len(parts) > 3 and parts[2].isupper() else "info"
    return {"category": "log", "message": line, "level": {"critical": "fatal"}.get(level, level)}


class Sentry(Middleware):
    """Reports job exceptions to Sentry with job tags, one isolation scope per job."""

    runs_after = ("diagnostics.tracing.Tracing",)  # reads the trace id it puts in the report
    report_keys = ("sentry",)

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.dsn = getattr(settings, "sentry_dsn", None) or os.environ.get("SENTRY_DSN")
        self.on = False

    def on_worker_start(self, worker: WorkerView | None) -> None:
        if not self.dsn:
            return
        import sentry_sdk
        sentry_sdk.init(dsn=self.dsn, default_integrations=False, auto_enabling_integrations=False,
                        include_local_variables=bool(getattr(self.settings, "sentry_include_locals", False)),
                        traces_sample_rate=None, in_app_exclude=NOT_IN_APP)
        scope = sentry_sdk.get_global_scope()
        if worker is not None:
            scope.set_tag("worker", worker.id)
            scope.set_tag("queues", ",".join(worker.settings.queues))
        self.on = True
        log.info("sentry: reporting job errors")

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        if self.on:
            import sentry_sdk
            sentry_sdk.flush(2.0)

    def applies(self, path: str) -> bool:
        return self.on

    def before_job(self, job: JobContext) -> None:
        if not self.on:
            return
        import sentry_sdk
        cm = sentry_sdk.isolation_scope()
        scope = cm.__enter__()
        scope.set_tag("job_id", job.job_id)
        scope.set_tag("task", job.path)
        scope.set_tag("queue", job.queue)
        scope.set_tag("attempt", str(job.attempt))
        trace = job.report.get("trace")
        if trace:
            scope.set_tag("otel.trace_id", trace["trace_id"])
            scope.continue_trace({"sentry-trace": f"{trace['trace_id']}-{trace['span_id']}-1"})
        job.state["sentry"] = (cm, scope)

    def after_job(self, job: JobContext, outcome: Any) -> None:
        held = job.state.pop("sentry", None)
        if held is None:
            return
        cm, scope = held
        try:
            report = outcome.status in _REPORTED or (
                outcome.status == Status.RETRY and getattr(self.settings, "sentry_report_retries", False))
            if report and outcome.exc is not None:
                scope.set_tag("status", outcome.status.value)
                if outcome.status == Status.INTERRUPT:
                    scope.set_level("warning")  # requeued: a warning, not an error
                self._enrich(scope, job, outcome)
                event_id = scope.capture_exception(outcome.exc)
                if event_id:
                    job.report["sentry"] = {"event_id": event_id}
        finally:
            cm.__exit__(None, None, None)

    def _enrich(self, scope: Any, job: JobContext, outcome: Any) -> None:
        """The job context and the log breadcrumbs of the event about to be sent."""
        context: dict[str, Any] = {"id": job.job_id, "task": job.path, "queue": job.queue, "attempt": job.attempt,
                                   "status": outcome.status.value, "see": f"runtime job {job.job_id}"}
        if getattr(self.settings, "sentry_include_params", False):
            context["params"] = masked_params(job.params)
        scope.set_context("job", context)
        for line in job.logs[-100:]:
            scope.add_breadcrumb(breadcrumb(line))

    def describe(self, job: Job) -> Rows:
        sent = (job.report or {}).get("sentry")
        return [("sentry", f"event {sent['event_id']}")] if sent else []


@on_reset
def close_client() -> None:
    """Close the Sentry client a worker of this process set up, and clear its tags."""
    import sys
    if "sentry_sdk" not in sys.modules:
        return
    import sentry_sdk
    scope = sentry_sdk.get_global_scope()
    if scope.client.is_active():
        scope.client.close(timeout=0)
    scope.clear()
    scope.set_client(None)
