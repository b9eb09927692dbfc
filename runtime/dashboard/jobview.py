"""What a job's page shows (:func:`job_context`) and what its live parts poll
(:func:`live_state`): the same facts ``runtime job`` prints, with secrets redacted."""

from __future__ import annotations

from typing import Any

from ..client.reader import JobView
from ..job import Job
from ..redact import mask, printable
from ..status import FINAL
from .dash import Dash
from .present import pretty, redact, seconds, sentry_href, trace_href

#: Log lines a live poll returns (the newest).
TAIL_LINES = 200
#: Rows of the report the page draws itself (a table, a link), not as text.
_OWN_ROWS = ("heap diff", "trace", "sentry")


def current_stack(dash: Dash, job: Job) -> list[str]:
    """The stack of ``job`` as its worker last reported it, [] when it is not running or
    its worker reports none."""
    if job.status.value != "started" or not job.worker:
        return []
    return dash.client.reader.stack(job.worker, job.id)


def log_lines(job: Job, limit: int | None = None) -> list[str]:
    """The job's captured log lines (the newest ``limit``), secrets masked, controls
    escaped (``\\x1b``: the same text the page shows)."""
    lines = [printable(mask(str(line))) for line in job.logs]
    return lines[-limit:] if limit else lines


def live_state(dash: Dash, job: Job) -> dict[str, Any]:
    """``{"id", "status", "final", "progress" (0..1 or None), "progress_message",
    "logs": [newest lines], "stack": [frames], "run": "1.2 s"}`` for the page's poll."""
    return {"id": job.id, "status": job.status.value, "final": job.status in FINAL, "progress": job.progress,
            "progress_message": printable(mask(job.progress_message or "")), "logs": log_lines(job, TAIL_LINES),
            "stack": current_stack(dash, job), "run": seconds(job.run_s)}


def report_rows(dash: Dash, job: Job) -> list[tuple[str, str]]:
    """The middleware's rows for the job's report (timings, memory...), but those the page
    draws itself (the heap diff table, the trace link)."""
    rows: list[tuple[str, str]] = []
    skipping = False
    for label, text in dash.client.middleware.describe(job):
        if label:
            skipping = label in _OWN_ROWS
        if not skipping:
            rows.append((label, mask(text)))
    return rows


def heap_table(job: Job) -> dict[str, Any] | None:
    """The heap diff as ``{"method", "total_bytes", "rows": [{"bytes", "count", "where"}]}``
    (sites for tracemalloc, kinds of objects for guppy), None when there is none."""
    diff = (job.report or {}).get("heap_diff")
    if not isinstance(diff, dict):
        return None
    items = diff.get("kinds") if diff.get("method") == "guppy" else diff.get("top")
    rows = [{"bytes": i.get("bytes"), "count": i.get("count"), "where": i.get("kind") or i.get("where")}
            for i in items or [] if isinstance(i, dict)]
    return {"method": diff.get("method") or "tracemalloc", "total_bytes": diff.get("total_bytes"), "rows": rows}


def history_rows(job: Job) -> list[dict[str, Any]]:
    """The status history, oldest first: ``{"at", "status", "rest": "k=v ..."}``."""
    return [{"at": h.get("at"), "status": h.get("status"),
             "rest": mask(" ".join(f"{k}={v}" for k, v in h.items() if k not in ("at", "status")))}
            for h in job.history]


def job_context(dash: Dash, view: JobView) -> dict[str, Any]:
    """Everything job.html shows about ``view``'s job."""
    job = view.job
    trace = (job.report or {}).get("trace") or {}
    trace_id = trace.get("trace_id") if isinstance(trace, dict) else None
    sentry = (job.report or {}).get("sentry") or {}
    event_id = sentry.get("event_id") if isinstance(sentry, dict) else None
    return {
        "job": job, "attempts": view.attempts, "final": job.status in FINAL,
        "params": pretty(redact(job.params, dash.redact)),
        "result": pretty(redact(job.result, dash.redact)) if job.status.value == "success" else None,
        "exc_message": mask(job.exc_message or ""), "traceback": mask(job.traceback or ""),
        "rows": report_rows(dash, job), "heap": heap_table(job), "history": history_rows(job),
        "logs": log_lines(job), "stack": current_stack(dash, job),
        "trace_id": trace_id, "trace_href": trace_href(dash.client.settings.trace_link, trace_id),
        "event_id": event_id, "sentry_href": sentry_href(dash.sentry_link, event_id),
        "profile": "profile" in job.artifacts, "artifacts": sorted(job.artifacts),
        "trace_link": lambda tid: trace_href(dash.client.settings.trace_link, tid),
    }
