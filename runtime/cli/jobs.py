"""Commands about jobs: enqueue, run, jobs, job, requeue, cancel, abort, move."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import ExitCode, TaskQueueError, WaitTimeout
from ..job import iso
from ..redact import redact
from ..status import REQUEUABLE, Status
from ..unique import unique_for_arg
from ..units import fmt_duration, plural
from .app import SECONDS, Ctx, NotFound, cli, echo, fail, handle_errors, out, parse_params
from .format import job_table, print_job


@cli.command()
@click.argument("path")
@click.argument("params", required=False)
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("-p", "--priority", default=0, show_default=True, type=int, help="-100..100, higher runs first")
@click.option("--delay", type=SECONDS, help="seconds before the job may start")
@click.option("--wait", "wait_s", type=SECONDS, help="wait up to this many seconds for the job to end and print it")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--no-check", "no_check", is_flag=True,
              help="queue without importing the task to check its path and params (for a task this folder cannot import)")
@click.option("--job-id", help="the job's id (letters, digits, _.:@/+=-): queued once while a job with it exists")
@click.option("--unique-key", help="queue nothing while a job queued with this key in the last --unique-for seconds exists")
@click.option("--unique-for", metavar="SECONDS",  # checked by runtime.unique.check_unique, as the API
              help="seconds a --unique-key holds (required with it; above 0, at most 10 years)")
@click.pass_obj
@handle_errors
def enqueue(obj: Ctx, path: str, params: str | None, queue: str, priority: int, delay: float | None,
            wait_s: float | None, as_json: bool, no_check: bool, job_id: str | None, unique_key: str | None,
            unique_for: str | None) -> None:
    """Queue a job of task PATH with PARAMS (a JSON object); prints its id.

    When the task can be imported from here, its path and params are checked first
    (exit 2, nothing queued, when wrong); a task that cannot be imported is queued
    unchecked. With --wait, prints the job once it ended (exit 5 if it did not succeed);
    when the wait times out, the job stays queued: its id and status are printed, exit 6.
    With --job-id or --unique-key, the id printed is that of the job already queued when
    there is one (nothing else is queued; a line on stderr says which job, its status and
    when the id or key frees)."""
    client = obj.client()
    job_id, queued = client.queue_once(path, parse_params(params), queue=queue, priority=priority, delay=delay,
                                       check=not no_check, job_id=job_id, unique_key=unique_key,
                                       unique_for=unique_for_arg(unique_for))
    if not queued:
        echo(held_note(client.reader.holder(job_id, unique_key), unique_key), err=True)
    if wait_s is None:
        out({"id": job_id, "queued": queued}) if as_json else echo(job_id)
        return
    try:
        if not any(queue in w.get("queues", ()) for w in client.reader.workers()):
            echo(f"warning: no live worker takes jobs from queue {queue!r} (runtime workers): "
                 f"job {job_id} waits for one", err=True)
        job = client.wait(job_id, timeout_s=wait_s)
    except WaitTimeout:
        job = client.get_job(job_id)
        out(job.to_dict()) if as_json else echo(job_id)
        fail(f"job {job_id} did not end within {wait_s:g} s; it is still {job.status.value} "
             f"(runtime job {job_id}; runtime cancel {job_id})", ExitCode.TIMEOUT)
    except (TaskQueueError, KeyboardInterrupt):  # queued all the same: never hide its id
        out({"id": job_id}) if as_json else echo(job_id)
        echo(f"job {job_id} was queued; the wait for it stopped:", err=True)
        raise
    out(job.to_dict()) if as_json else print_job(job, client.middleware)
    if job.status != Status.SUCCESS:
        sys.exit(ExitCode.JOB_FAILED)


def held_note(h: dict[str, Any], unique_key: str | None) -> str:
    """One line: the enqueue queued nothing, ``h`` (Reader.holder) holds the id or key."""
    state = h["status"] or "gone"
    if h["ended_at"]:
        state += f", ended {iso(h['ended_at'])}"
    what = f"job {h['id']} holds unique key {unique_key!r}" if unique_key else f"a job with id {h['id']} exists"
    free = ("the key" if unique_key else "the id") + (
        f" frees in {fmt_duration(h['frees_in_s'])}" if h["frees_in_s"] is not None else
        " frees once that job has ended and its document expired (its status's ttl_s)")
    return f"not queued: {what} ({state}); {free}"


@cli.command()
@click.argument("path")
@click.argument("params", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the whole outcome as JSON")
@click.pass_obj
@handle_errors
def run(obj: Ctx, path: str, params: str | None, as_json: bool) -> None:
    """Run task PATH with PARAMS in this process now and print its result (no Redis)."""
    from ..local import run_task
    outcome = run_task(path, parse_params(params), obj.settings())
    if as_json:
        out(outcome.to_dict())
    elif outcome.reason in ("bad-task", "bad-params"):
        fail(str(outcome.exception), ExitCode.USAGE)
    elif outcome.ok:
        echo(json.dumps(outcome.result, indent=2, ensure_ascii=False))
    else:
        echo(outcome.traceback or "", err=True, nl=False)
        echo(f"error: {path} ended {outcome.status.value}", err=True)
    if not outcome.ok:
        sys.exit(ExitCode.JOB_FAILED)


@cli.command()
@click.option("-s", "--status", type=click.Choice([s.value for s in Status]))
@click.option("-q", "--queue")
@click.option("--path")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--before", metavar="CURSOR", help="the page after the one that printed this cursor")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def jobs(obj: Ctx, status: str | None, queue: str | None, path: str | None, limit: int, before: str | None,
         as_json: bool) -> None:
    """List jobs, newest change first."""
    from ..client.paging import parse_cursor
    try:
        parse_cursor(before)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--before") from None
    page = obj.client(middleware=False).reader.jobs(status=status, queue=queue, path=path, limit=limit, before=before)
    if as_json:
        listed = page.to_dict()
        for doc in listed["jobs"]:  # as `runtime job` shows them
            doc.update(params=redact(doc["params"]), result=redact(doc["result"]))
        out(listed)
        return
    job_table(page.jobs)
    if not page.jobs:
        echo("(no jobs)")
        return
    n = len(page.jobs)
    shown = f"{n:,} of {page.total:,} {plural(page.total, 'job')}" if page.total is not None else \
        f"{n:,} {plural(n, 'job')} shown (no total: the store does not count by queue or path)"
    more = f"; next page: runtime jobs --before {page.next}" if page.next else ""
    echo(f"({shown}{more})")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--artifact", metavar="NAME", help="print an artifact stored with the job (e.g. profile)")
@click.option("--html", "html_file", type=click.Path(dir_okay=False),
              help="with --artifact: write it as HTML to this file ('-': standard output)")
@click.pass_obj
@handle_errors
def job(obj: Ctx, job_id: str, as_json: bool, artifact: str | None, html_file: str | None) -> None:
    """Everything about one job: params, status history, timings, result or traceback."""
    client = obj.client()
    view = client.reader.job(job_id)
    j = view.job
    if artifact is None:
        if html_file:
            raise click.UsageError("--html needs --artifact NAME")
        if as_json:
            doc = j.to_dict()
            doc.update(params=redact(j.params), result=redact(j.result))  # as the text view shows them
            out({**doc, "attempts": [a.to_dict() for a in view.attempts], "parked_cap": view.parked_cap})
        else:
            print_job(j, client.middleware, view.parked_cap)
        return
    if artifact not in j.artifacts:
        stored = ", ".join(sorted(j.artifacts)) or "none"
        raise NotFound(f"job {job_id} has no artifact {artifact!r} (it has: {stored})")
    try:
        text = client.middleware.render_artifact(artifact, j.artifacts[artifact], html=bool(html_file))
    except KeyError:
        raise NotFound(f"no configured middleware renders artifact {artifact!r} "
                       f"(middleware: {', '.join(m.name for m in client.middleware.items) or 'none'})") from None
    if not html_file:
        echo(text)
        return
    try:
        with click.open_file(html_file, "w", encoding="utf-8") as fh:  # "-": standard output
            fh.write(text)
    except OSError as exc:
        fail(f"cannot write {html_file}: {exc.strerror or exc}", ExitCode.ERROR)
    if html_file != "-":
        echo(f"wrote {html_file}")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("-s", "--status", default="failed", show_default=True,
              type=click.Choice(sorted(s.value for s in REQUEUABLE)), help="with no ID: requeue jobs with this status")
@click.option("-q", "--queue", help="with no ID: only this queue")
@click.option("--path", help="with no ID: only this task path")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def requeue(obj: Ctx, ids: tuple[str, ...], status: str, queue: str | None, path: str | None, as_json: bool) -> None:
    """Queue final jobs again: the IDs given, or all of a status (failed) by queue/path.
    A job parked by a cap (`runtime job` says so) goes back to its queue now."""
    client = obj.client()
    if ids:
        done = client.requeue(*ids)
    else:
        if not queue and not path:
            raise click.UsageError("give job IDs, or --queue and/or --path to requeue all failed jobs of them")
        done = client.requeue_where(status, queue=queue, path=path)
    out({"requeued": done}) if as_json else echo(f"requeued {len(done)} {plural(len(done), 'job')}")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
@handle_errors
def cancel(obj: Ctx, ids: tuple[str, ...]) -> None:
    """Cancel waiting jobs (they never run)."""
    n = len(obj.client().cancel(*ids))
    echo(f"cancelled {n} {plural(n, 'job')}")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
@handle_errors
def abort(obj: Ctx, ids: tuple[str, ...]) -> None:
    """Abort running jobs (their worker kills them within about a second)."""
    n = len(obj.client().abort(*ids))
    echo(f"abort requested for {n} {plural(n, 'job')}")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("-q", "--queue", help="the queue to move them to (a job gets a new id there)")
@click.option("-p", "--priority", type=int, help="the priority to give them, -100..100")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def move(obj: Ctx, ids: tuple[str, ...], queue: str | None, priority: int | None, as_json: bool) -> None:
    """Move waiting jobs to another queue and/or priority, keeping their due time; prints
    each job's id now. A job moved to another queue gets a new id there; its old id ends
    moved and says where it went (`runtime job OLD_ID`); one moved there before says
    "already moved to NEW_ID". Refused (exit 7) for a job that runs or has ended."""
    if queue is None and priority is None:
        raise click.UsageError("give --queue and/or --priority")
    now = obj.client().moves(ids, queue=queue, priority=priority, strict=True)
    if as_json:
        out({"moved": {old: new for old, (_, new) in zip(ids, now)},
             "already_moved": [old for old, (reply, _) in zip(ids, now) if reply == "already-moved"]})
        return
    for old, (reply, new) in zip(ids, now):
        echo(f"{old} already moved to {new}" if reply == "already-moved" else
             f"{old} -> {new}" if new != old else f"{old} (same id: priority {priority})" if priority is not None
             else f"{old} (already in queue {queue}: nothing to change)")
