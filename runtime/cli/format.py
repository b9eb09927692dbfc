"""How the CLI shows jobs, workers and events to a person (text; ``--json`` prints data).

The job's report is shown by the middleware that wrote it (``Middleware.describe``): this
module knows no diagnostic by name.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from ..caps import caps_text
from ..client.reader import Attempt, attempts_of
from ..job import Job, iso, queue_of
from ..middleware import Chain
from ..redact import mask, printable, redact
from ..units import fmt_bytes, fmt_seconds, plural
from .app import echo


def ago(ts: float | None) -> str:
    """How long ago UNIX time ``ts`` was, shortly (``12.0s ago``, ``5m ago``, ``3.0h ago``)."""
    if ts is None:
        return "-"
    d = time.time() - ts
    return f"{d:.1f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def job_table(jobs: list[Job]) -> None:
    """One line per job (``runtime jobs``)."""
    echo(f"{'ID':32}  {'STATUS':10} {'QUEUE':10} {'PATH':40} {'ATT':>3} {'PROGRESS':>8} {'RUN':>9}  CHANGED")
    for j in jobs:
        changed = j.ended_at or j.started_at or j.queued_at
        prog = "-" if j.progress is None else f"{j.progress:.0%}"
        echo(f"{j.id:32}  {j.status.value:10} {j.queue[:10]:10} {j.path[-40:]:40} {j.attempt:>3} "
                   f"{prog:>8} {fmt_seconds(j.run_s):>9}  {ago(changed)}")


def _row(label: str, text: str) -> None:
    if label == "trace" and sys.stdout.isatty():  # the trace link, clickable where terminals allow
        click.echo(_URL.sub(_hyperlink, printable(mask(f"  {label:9} {text}"))))
        return
    echo(f"  {label:9} {text}")


#: A URL in a line already escaped (so it holds no control character).
_URL = re.compile(r"https?://\S+")


def _hyperlink(m: re.Match[str]) -> str:
    """The URL as an OSC 8 terminal hyperlink (terminals without them show the text)."""
    return f"\x1b]8;;{m[0]}\x1b\\{m[0]}\x1b]8;;\x1b\\"


def print_job(job: Job, chain: Chain, parked_cap: str | None = None) -> None:
    """Everything about one job (``runtime job``): its document (the values of secret
    keys in params and result as ``***``: runtime.redact.SECRET_KEYS; ``parked_cap``: the
    cap it waits for, out of its queue), then each middleware's rows for its report,
    history, traceback and logs."""
    echo(f"job {job.id}")
    _row("path", job.path)
    _row("params", json.dumps(redact(job.params), ensure_ascii=False)[:2000])
    _row("queue", f"{job.queue} (priority {job.priority})")
    _row("status", f"parked (cap {parked_cap}): queued, out of its queue until the cap has room "
                   f"(runtime requeue {job.id} puts it back now)" if parked_cap else
                   job.status.value + (f" ({job.reason})" if job.reason else ""))
    if job.moved_to:
        _row("moved to", f"{job.moved_to} (its id in queue {queue_of(job.moved_to)}: runtime job {job.moved_to})")
    if job.moved_from:
        _row("moved", f"from {job.moved_from} (its id in queue {queue_of(job.moved_from)})")
    _row("queued", f"{iso(job.queued_at)}   due {iso(job.due_at)}")
    attempts = attempts_of(job)
    _current_attempt(job, attempts)
    if job.progress is not None:
        _row("progress", f"{job.progress:.0%} {job.progress_message or ''}")
    if job.status.value == "success":
        _row("result", json.dumps(redact(job.result), ensure_ascii=False)[:4000])
    if job.overrun:
        _row("watchdog", job.overrun)
    for name, text in job.unreadable.items():
        _row("unreadable", f"{name} = {text!r} (a corrupt document: left out above)")
    unserved = job.meta.get("unserved") if job.status.value == "retry" else None
    if isinstance(unserved, dict):  # runtime.worker.unserved
        n = unserved.get("count") or 0
        _row("waiting", f"for a worker that serves {job.path}: handed back {n} {plural(n, 'time')} since "
                        f"{iso(unserved.get('since'))}, last by {unserved.get('worker')}; ends failed (unserved) "
                        f"if none serves it by {iso(unserved.get('until'))}")
    for label, text in chain.describe(job):
        _row(label, text)
    for name, data in job.artifacts.items():
        _row("artifact", f"{name}: {len(data)} bytes (runtime job {job.id} --artifact {name})")
    _attempt_lines(attempts)
    echo("  history")
    for h in job.history:
        extra = " ".join(f"{k}={v}" for k, v in h.items() if k not in ("at", "status"))
        echo(f"    {iso(h.get('at'))}  {h.get('status'):10} {extra}")
    if job.traceback:
        echo("  traceback")
        for line in job.traceback.rstrip().splitlines():
            echo(f"    {line}")
    if job.logs:
        echo("  logs")
        for line in job.logs:
            echo(f"    {line}")


def _current_attempt(job: Job, attempts: list[Attempt]) -> None:
    """The rows of the job's current (latest) attempt, said to be its: worker, times and
    error, so that fields of different attempts are never shown as one (each attempt has
    its line: :func:`_attempt_lines`)."""
    _row("attempts", f"{job.attempt} (retries {job.retries}, worker lost {job.lost})")
    cur = attempts[-1] if attempts and attempts[-1].number == job.attempt else None
    if cur is None:  # no history (a compact success), or not run yet: the document's fields
        _row("worker", job.worker or "-")
        _row("started", f"{iso(job.started_at) or '-'}   ended {iso(job.ended_at) or '-'}")
        _row("wait", f"{fmt_seconds(job.wait_s)}   run {fmt_seconds(job.run_s)}"
             + (f" (timeout {job.timeout_s:g} s)" if job.timeout_s else ""))
        if job.exc_type:
            _row("error", f"{job.exc_type}: {job.exc_message}")
        return
    ended = cur.ended_at is not None
    label = "" if len(attempts) == 1 else f" (attempt {cur.number}, the latest)"
    _row("worker", f"{cur.worker or '-'}{label}")
    _row("started", f"{iso(cur.started_at)}   ended {iso(cur.ended_at) if ended else '- (running)'}"
         + (f" {cur.status}" if ended else ""))
    run = (cur.ended_at or 0.0) - cur.started_at if ended else None
    _row("wait", f"{fmt_seconds(job.wait_s)}   run {fmt_seconds(run)}"
         + (f" (timeout {job.timeout_s:g} s)" if job.timeout_s else ""))
    errs = [a for a in attempts if a.error]
    if job.exc_type:
        which = errs[-1].number if errs else cur.number
        _row("error", f"{job.exc_type}: {job.exc_message}" + (f" (attempt {which})" if len(attempts) > 1 else ""))
    if not ended and len(attempts) > 1 and (job.report or job.logs or job.traceback):
        _row("note", f"attempt {cur.number} runs: the report, logs and traceback below are of an earlier attempt"
             )


def _attempt_lines(attempts: list[Attempt]) -> None:
    """One line per attempt, when there were several: its worker, start (its claim until
    it ran), outcome and time, how long it lasted, note and error."""
    if len(attempts) < 2:
        return
    echo("  attempts")
    for a in attempts:
        took = fmt_seconds(a.ended_at - a.started_at) if a.ended_at is not None else "-"
        end = f"{a.status} {iso(a.ended_at)}" if a.ended_at is not None else "running"
        extra = "".join(f"  {k} {v}" for k, v in (("note", a.note), ("error", a.error)) if v)
        echo(f"    #{a.number}  {a.worker or '-'}  started {iso(a.started_at)}  {end}  for {took}{extra}")


def print_workers(entries: list[dict[str, Any]]) -> None:
    """Supervisors, each followed by its worker processes, then unsupervised workers
    (``runtime workers``; entries as runtime.client.reader.Reader.workers gives them)."""
    if not entries:
        echo("no live workers")
    sups = {e["id"] for e in entries if e.get("kind") == "supervisor"}
    for e in entries:
        rss = (e.get("rss_bytes") or 0) / 2**20
        if e.get("kind") == "supervisor":
            limits = (f"  mem-limit {fmt_bytes(e['mem_limit_bytes'])} hard {fmt_bytes(e['mem_hard_limit_bytes'])}"
                      if e.get("mem_limit_bytes") else "")
            kids = e.get("children", [])
            recycling = sum(1 for c in kids if c.get("recycling"))
            echo(f"{e['id']}  supervisor {e.get('state', '?')}  host {e['host']} pid {e['pid']}  "
                       f"processes {len(kids) - recycling}/{e.get('processes')}"
                       f"{f' (+{recycling} recycling)' if recycling else ''}  restarts {e.get('restarts') or 0}  "
                       f"kills {e.get('kills') or 0}  rss {rss:.1f} MiB{limits}  since {e['started_at']}")
            continue
        indent = "  " if e.get("supervisor") in sups else ""
        running = [r for r in e["running"] if r.get("run", True)]  # the others are prefetched: claimed, not started
        waiting = len(e["running"]) - len(running)
        echo(f"{indent}{e['id']}  {e.get('state', '?')}  host {e['host']} pid {e['pid']}  queues {','.join(e['queues'])}  "
                   f"running {len(running)}/{e.get('greenlets', '?')}{f' (+{waiting} prefetched)' if waiting else ''}  "
                   f"done {e['jobs_done']}  rss {rss:.1f} MiB  since {e['started_at']}"
                   + (f"  recycling: {e['recycle']}" if e.get("recycle") else "")
                   + (f"  scheduler (synced {ago(e['scheduler_synced_at'])})" if e.get("scheduler_synced_at") else "")
                   + (f"  caps {caps_text(e['caps'], [r['path'] for r in e['running']])}" if e.get("caps") else ""))
        for r in running:
            echo(f"{indent}    {r['id']} {r['path']}  " + " <- ".join(r["stack"][:3]))


def print_events(events: list[dict[str, Any]]) -> None:
    """Recycles, kills, crashes and losses of worker processes, newest first, each with
    what became of the jobs it ran (``runtime events``; runtime.broker.registry.EVENT_KEYS)."""
    if not events:
        echo("no events")
    for e in events:
        where = f"pid {e['pid']}" + (f" on {e['host']}" if e.get("host") else "")
        ran = f"; {e['jobs_run']} {plural(e['jobs_run'], 'job')} run by then" if e["event"] == "recycle" and \
            e.get("jobs_run") is not None and e.get("reason") != "max-jobs" else ""
        echo(f"{e['at']}  {e['event']} ({e.get('reason')})  {where}: {e.get('detail')}{ran}")
        for g in e["top_growers"]:
            echo(f"    RSS grew {fmt_bytes(g['rss_growth_bytes'])} when job {g['job']} ended")
        if e["event"] not in ("recycle", "scale"):  # the others took back a process's jobs
            jobs = ", ".join(f"{j['id']} ({j.get('path')})" for j in e["running"]) or "none"
            ahead = len(e.get("unstarted") or ())  # claimed ahead, never started: requeued uncharged
            echo(f"    running jobs: {jobs}" + (f"; {ahead} prefetched, not started" if ahead else "")
                 + f"; requeued {e.get('requeued') or 0}, failed {e.get('failed') or 0} (worker-lost)")


#: Widths of the QUEUE and CAP columns of ``runtime queues``; longer names are cut with an
#: ellipsis (``--json`` has them whole).
QUEUE_COLUMN, CAP_COLUMN = 20, 40


def cut(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` characters, else its start and an ellipsis, ``width`` long."""
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def print_queues(data: dict[str, Any]) -> None:
    """Queue depths, job counts by status and concurrency caps (``runtime queues``); long
    queue and cap names (a cap per key value: ``path=value``) cut to their column."""
    echo(f"{'QUEUE':{QUEUE_COLUMN}} {'READY':>8} {'DELAYED':>8}")
    for q, d in data["queues"].items():
        echo(f"{cut(q, QUEUE_COLUMN):{QUEUE_COLUMN}} {d['ready']:>8} {d['delayed']:>8}"
             + ("  paused" if d.get("paused") else ""))
    counts = data["counts"]
    echo("jobs by status: " + (", ".join(f"{s} {n}" for s, n in counts.items() if n) or "none"))
    caps = data.get("caps", {})
    if caps:
        echo(f"{'CAP':{CAP_COLUMN}} {'RUNNING':>8} {'PARKED':>8} {'RATE-WINDOW':>12}")
    for name, cap in caps.items():
        echo(f"{cut(name, CAP_COLUMN):{CAP_COLUMN}} {cap['running']:>8} {cap['parked']:>8} {cap['recent_starts']:>12}")
