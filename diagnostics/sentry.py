"""Errors of jobs to Sentry (sentry-sdk): once per failed attempt, in a scope of its own.

Configured by ``Settings.sentry_dsn`` (``--sentry-dsn``) or ``SENTRY_DSN``; without one
this middleware does nothing and imports nothing. The client is created in the worker
process after it starts (never inherited across fork) and flushed when it stops.

- Each job runs in ``sentry_sdk.isolation_scope()``: its tags never leak to another job,
  even with many greenlets (each greenlet has its own contextvars).
- Tags: ``job_id``, ``task``, ``queue``, ``attempt`` and ``otel.trace_id`` (the
  OpenTelemetry trace of the job, when Tracing is configured: it must come first;
  Sentry's own trace id is a different one). Worker-wide tags (``worker``, ``queues``) go
  on the global scope, which job scopes inherit.
- Reported: attempts that end failed, timeout or maxretries. Attempts that will be
  retried are reported only with ``sentry_report_retries``; aborts (asked for) and
  interrupts (requeued) are not errors.
- Local variables are sent only with ``sentry_include_locals`` (off by default: PII).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows, WorkerView
from runtime.resets import on_reset
from runtime.status import Status

log = logging.getLogger("runtime.sentry")

_REPORTED = {Status.FAILED, Status.TIMEOUT, Status.MAXRETRIES}


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
                        traces_sample_rate=None)
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
                event_id = scope.capture_exception(outcome.exc)
                if event_id:
                    job.report["sentry"] = {"event_id": event_id}
        finally:
            cm.__exit__(None, None, None)

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
