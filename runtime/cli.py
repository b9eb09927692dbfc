"""The ``runtime`` command: maps arguments to settings and calls the library.

Exit codes:
  0 OK; 1 ERROR (any other runtime error); 2 USAGE (bad arguments or params); 3 NOT_FOUND
  (job id unknown); 4 UNAVAILABLE (Redis or MongoDB unreachable); 5 JOB_FAILED (run, enqueue --wait:
  the job did not succeed); 6 TIMEOUT (enqueue --wait deadline passed); 7 NOT_ALLOWED (a
  status change that is not allowed, e.g. cancel of a running job); 8 RECYCLED (worker: a
  worker process stopped to be recycled; its supervisor replaces it).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from typing import Any, Callable

import click

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
EXIT_JOB_FAILED, EXIT_TIMEOUT, EXIT_NOT_ALLOWED = 5, 6, 7


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn runtime's errors into one line on stderr and a named exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import (BrokerUnavailable, ConfigError, InvalidParams, InvalidTransition,
                             JobNotFound, TaskQueueError, WaitTimeout)
        try:
            return fn(*args, **kwargs)
        except JobNotFound as exc:
            _fail(str(exc), EXIT_NOT_FOUND)
        except BrokerUnavailable as exc:
            _fail(str(exc), EXIT_UNAVAILABLE)
        except WaitTimeout as exc:
            _fail(str(exc), EXIT_TIMEOUT)
        except InvalidTransition as exc:
            _fail(str(exc), EXIT_NOT_ALLOWED)
        except (InvalidParams, ConfigError) as exc:
            _fail(str(exc), EXIT_USAGE)
        except TaskQueueError as exc:
            _fail(f"{type(exc).__name__}: {exc}", EXIT_ERROR)
        except JobNotFoundProfile as exc:
            _fail(str(exc), EXIT_NOT_FOUND)
        except Exception as exc:
            if not type(exc).__module__.startswith(("pymongo", "bson")):
                raise
            from .mongo_store import short_error, translate
            mapped = translate(exc)  # MongoDB's errors: one line too, never a traceback
            if mapped is None:
                _fail(f"MongoDB: {type(exc).__name__}: {short_error(exc)}", EXIT_ERROR)
            _fail(str(mapped), EXIT_USAGE if isinstance(mapped, ConfigError) else EXIT_UNAVAILABLE)
    return wrapper


class Ctx:
    def __init__(self, overrides: dict[str, Any], config: str | None) -> None:
        self.overrides = overrides
        self.config = config

    def settings(self, **more: Any) -> Any:
        from .settings import load_settings
        given = {k: v for k, v in more.items() if v is not None}  # an unset subcommand flag keeps the group's
        return load_settings({**self.overrides, **given}, config_file=self.config)

    def client(self) -> Any:
        from .client import Client
        client = Client(self.settings())
        ctx = click.get_current_context(silent=True)
        if client.mongo is not None and ctx is not None:  # closed at the command's end, exit not delayed
            from .mongo_store import close_before_exit
            ctx.find_root().call_on_close(lambda: close_before_exit(client.mongo.store.client))
        return client


class JobNotFoundProfile(Exception):
    pass


def _params(text: str | None) -> dict[str, Any]:
    from .errors import InvalidParams
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParams(f"params are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidParams(f"params must be a JSON object like '{{\"a\": 1}}', got {type(value).__name__}")
    return value


def _out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    d = time.time() - ts
    return f"{d:.1f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog="\b\n" + __doc__.split("\n\n", 1)[1])
@click.option("--redis", "redis_url", metavar="URL", help="redis://, rediss:// or unix:// URL [env RUNTIME_REDIS_URL; default: the embedded server under .runtime/]")
@click.option("--prefix", "key_prefix", metavar="PREFIX", help="prefix of every Redis key [env RUNTIME_KEY_PREFIX; default rt]")
@click.option("--mongodb", "mongodb_url", metavar="URL", help="keep and read job documents in this MongoDB [env RUNTIME_MONGODB_URL; default: Redis only]")
@click.option("--config", type=click.Path(dir_okay=False), help="settings file [default ./runtime.toml if present]")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, key_prefix: str | None, mongodb_url: str | None,
        config: str | None) -> None:
    """runtime: an observable task queue and worker runtime."""
    ctx.obj = Ctx({"redis_url": redis_url, "key_prefix": key_prefix, "mongodb_url": mongodb_url}, config)


@cli.command()
@click.option("-q", "--queues", help="queues to take jobs from, first ones first [default: default]")
@click.option("-g", "--greenlets", type=int, help="jobs run at once in this process [default 25]")
@click.option("--tasks", "task_modules", help="module prefixes tasks may be imported from [default tasks_example]")
@click.option("--grace", "grace_s", type=float, help="seconds running jobs may finish after SIGTERM [default 30]")
@click.option("--prefetch", type=int, help="jobs claimed ahead of free greenlets [default: as many as --greenlets]")
@click.option("--trace-memory", is_flag=False, flag_value="*", default=None, metavar="[PATTERNS]",
              help="store a heap diff of every job (or of task paths matching PATTERNS); they run alone")
@click.option("--sentry-dsn", help="report job errors to this Sentry DSN [env SENTRY_DSN]")
@click.option("--profile", is_flag=False, flag_value="*", default=None, metavar="[PATTERNS]",
              help="store a pyinstrument profile of every job (or of task paths matching PATTERNS)")
@click.option("--otlp-endpoint", help="send traces over OTLP/HTTP here, e.g. http://localhost:4318 [env OTEL_EXPORTER_OTLP_ENDPOINT]")
@click.option("--mongodb", "mongodb_url", metavar="URL", help="keep job documents in this MongoDB too [env RUNTIME_MONGODB_URL]")
@click.option("-p", "--processes", type=int, help="worker processes under one supervisor that restarts them [default 1, unsupervised]")
@click.option("--mem-limit", "mem_limit_bytes", metavar="SIZE",
              help="soft memory limit per process, e.g. 512M (K, M, G): over it a worker recycles without losing a job")
@click.option("--mem-hard-limit", "mem_hard_limit_bytes", metavar="SIZE",
              help="the supervisor kills a worker above this and requeues its jobs [default soft + 25%, at least +64M]")
@click.option("--max-jobs", type=int, help="recycle a worker process after N jobs")
@click.option("--max-time", "max_time_s", type=float, metavar="SECONDS", help="recycle a worker process after SECONDS")
@click.option("--burst", is_flag=True, help="exit once no job is ready, running or delayed")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.pass_obj
@handle_errors
def worker(obj: Ctx, queues: str | None, greenlets: int | None, task_modules: str | None,
           grace_s: float | None, prefetch: int | None, profile: str | None, trace_memory: str | None,
           sentry_dsn: str | None,
           otlp_endpoint: str | None,
           mongodb_url: str | None,
           processes: int | None, mem_limit_bytes: str | None, mem_hard_limit_bytes: str | None,
           max_jobs: int | None, max_time_s: float | None,
           burst: bool,
           log_level: str) -> None:
    """Run jobs (gevent is monkey-patched first thing).

    With --processes, --mem-limit, --mem-hard-limit, --max-jobs or --max-time, a
    supervisor runs the worker processes and replaces each one that recycles or dies
    (runtime.supervisor).
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = obj.settings(queues=queues, greenlets=greenlets, task_modules=task_modules, grace_s=grace_s,
                            prefetch=prefetch, otlp_endpoint=otlp_endpoint, sentry_dsn=sentry_dsn,
                            profile=profile, trace_memory=trace_memory, processes=processes,
                            mem_limit_bytes=mem_limit_bytes, mem_hard_limit_bytes=mem_hard_limit_bytes,
                            max_jobs=max_jobs, max_time_s=max_time_s,
                            mongodb_url=mongodb_url)
    from ._entry import is_supervised_child
    if settings.supervised and not is_supervised_child():
        from .supervisor import Supervisor
        sys.exit(Supervisor(settings, burst=burst).run())
    from .worker import Worker
    sys.exit(Worker(settings).run(burst=burst))


@cli.command()
@click.argument("path")
@click.argument("params", required=False)
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("-p", "--priority", default=0, show_default=True, type=int, help="-100..100, higher runs first")
@click.option("--delay", type=float, help="seconds before the job may start")
@click.option("--wait", "wait_s", type=float, help="wait up to this many seconds for the job to end and print it")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
@handle_errors
def enqueue(obj: Ctx, path: str, params: str | None, queue: str, priority: int, delay: float | None,
            wait_s: float | None, as_json: bool) -> None:
    """Queue a job of task PATH with PARAMS (a JSON object); prints its id."""
    client = obj.client()
    job_id = client.queue_job(path, _params(params), queue=queue, priority=priority, delay=delay)
    if wait_s is None:
        _out({"id": job_id}) if as_json else click.echo(job_id)
        return
    job = client.wait(job_id, timeout_s=wait_s)
    _out(job.to_dict()) if as_json else _print_job(job)
    if job.status != "success":
        sys.exit(EXIT_JOB_FAILED)


@cli.command()
@click.argument("path")
@click.argument("params", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the whole outcome as JSON")
@click.pass_obj
@handle_errors
def run(obj: Ctx, path: str, params: str | None, as_json: bool) -> None:
    """Run task PATH with PARAMS in this process now and print its result (no Redis)."""
    from .local import run_task
    outcome = run_task(path, _params(params), obj.settings())
    if as_json:
        _out(outcome.to_dict())
    elif outcome.reason in ("bad-task", "bad-params"):
        _fail(str(outcome.exception), EXIT_USAGE)
    elif outcome.ok:
        click.echo(json.dumps(outcome.result, indent=2, ensure_ascii=False))
    else:
        click.echo(outcome.traceback or "", err=True, nl=False)
        click.echo(f"error: {path} ended {outcome.status.value}", err=True)
    if not outcome.ok:
        sys.exit(EXIT_JOB_FAILED)


@cli.command()
@click.option("-s", "--status")
@click.option("-q", "--queue")
@click.option("--path")
@click.option("-n", "--limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def jobs(obj: Ctx, status: str | None, queue: str | None, path: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest change first."""
    from .status import Status
    if status and status not in {s.value for s in Status}:
        raise click.BadParameter(f"{status!r}; one of {', '.join(s.value for s in Status)}", param_hint="--status")
    found = obj.client().store.list_jobs(status=status, queue=queue, path=path, limit=limit)
    if as_json:
        _out([j.to_dict() for j in found])
        return
    click.echo(f"{'ID':24}  {'STATUS':10} {'QUEUE':10} {'PATH':40} {'ATT':>3} {'PROGRESS':>8} {'RUN':>9}  CHANGED")
    for j in found:
        changed = j.ended_at or j.started_at or j.queued_at
        prog = "-" if j.progress is None else f"{j.progress:.0%}"
        click.echo(f"{j.id:24}  {j.status.value:10} {j.queue[:10]:10} {j.path[-40:]:40} {j.attempt:>3} "
                   f"{prog:>8} {_ms(j.run_s):>9}  {_ago(changed)}")


def obj_settings() -> Any:
    """The settings of the running command, or None."""
    ctx = click.get_current_context(silent=True)
    try:
        return ctx.obj.settings() if ctx is not None and ctx.obj is not None else None
    except Exception:  # noqa: BLE001
        return None


def _print_job(job: Any) -> None:
    from .job import iso
    click.echo(f"job {job.id}")
    click.echo(f"  path      {job.path}")
    click.echo(f"  params    {json.dumps(job.params, ensure_ascii=False)[:2000]}")
    click.echo(f"  queue     {job.queue} (priority {job.priority})")
    click.echo(f"  status    {job.status.value}" + (f" ({job.reason})" if job.reason else ""))
    click.echo(f"  attempts  {job.attempt} (retries {job.retries}, worker lost {job.lost})")
    click.echo(f"  worker    {job.worker or '-'}")
    click.echo(f"  queued    {iso(job.queued_at)}   due {iso(job.due_at)}")
    click.echo(f"  started   {iso(job.started_at) or '-'}   ended {iso(job.ended_at) or '-'}")
    click.echo(f"  wait      {_ms(job.wait_s)}   run {_ms(job.run_s)}")
    if job.progress is not None:
        click.echo(f"  progress  {job.progress:.0%} {job.progress_message or ''}")
    if job.status.value == "success":
        click.echo(f"  result    {json.dumps(job.result, ensure_ascii=False)[:4000]}")
    if job.exc_type:
        click.echo(f"  error     {job.exc_type}: {job.exc_message}")
    if job.overrun:
        click.echo(f"  watchdog  {job.overrun}")
    trace_ids = job.report.get("trace") if job.report else None
    if trace_ids:
        settings = obj_settings()
        link = settings.trace_link if settings else None
        click.echo(f"  trace     {trace_ids['trace_id']}" + (f"  {link.format(trace_id=trace_ids['trace_id'])}" if link else ""))
    timing = job.report.get("timing") if job.report else None
    if timing:
        click.echo(f"  timing    wait {_ms(timing.get('wait_s'))}  wall {_ms(timing.get('wall_s'))}  "
                   f"cpu {_ms(timing.get('cpu_s'))}  switches {timing.get('switches', '-')}")
    mem = job.report.get("memory") if job.report else None
    if mem:
        click.echo(f"  memory    rss {mem['rss_before'] / 2**20:.1f} -> {mem['rss_after'] / 2**20:.1f} MiB "
                   f"({mem['rss_delta'] / 2**20:+.2f} MiB, {mem['concurrent']} other jobs running)")
    prof = job.report.get("profile") if job.report else None
    if prof:
        click.echo(f"  profile   {prof['samples']} samples over {_ms(prof['duration_s'])} "
                   f"(runtime job {job.id} --profile); most self time:")
        for f in prof["top"][:5]:
            click.echo(f"    {_ms(f['self_s']):>9}  {f['function']}  {f['where']}")
    for key, value in (job.report or {}).items():
        if key == "heap_diff":
            click.echo(f"  heap diff {value['total_bytes'] / 1024:+.1f} KiB over the run (the job ran alone); grew most:")
            for s in value["top"][:5]:
                click.echo(f"    {s['bytes'] / 1024:+9.1f} KiB {s['count']:+7d} blocks  {s['where']}")
            continue
        if key not in ("timing", "trace", "memory", "profile"):
            click.echo(f"  {key:9} {json.dumps(value, ensure_ascii=False)[:2000]}")
    click.echo("  history")
    for h in job.history:
        extra = " ".join(f"{k}={v}" for k, v in h.items() if k not in ("at", "status"))
        click.echo(f"    {iso(h.get('at'))}  {h.get('status'):10} {extra}")
    if job.traceback:
        click.echo("  traceback")
        for line in job.traceback.rstrip().splitlines():
            click.echo(f"    {line}")
    if job.logs:
        click.echo("  logs")
        for line in job.logs:
            click.echo(f"    {line}")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--profile", "show_profile", is_flag=True, help="print the job's pyinstrument profile")
@click.option("--profile-html", type=click.Path(dir_okay=False, writable=True), help="write the profile as HTML here")
@click.pass_obj
@handle_errors
def job(obj: Ctx, job_id: str, as_json: bool, show_profile: bool, profile_html: str | None) -> None:
    """Everything about one job: params, status history, timings, result or traceback."""
    j = obj.client().get_job(job_id)
    if show_profile or profile_html:
        if not j.profile:
            raise JobNotFoundProfile(f"job {job_id} has no profile (run the worker with --profile, "
                                     f"or @task(profile=True))")
        from diagnostics.profiling import decode_session, render_html, render_text
        session = decode_session(j.profile)
        if profile_html:
            with open(profile_html, "w") as fh:
                fh.write(render_html(session))
            click.echo(f"wrote {profile_html}")
        if show_profile:
            click.echo(render_text(session))
        return
    _out(j.to_dict()) if as_json else _print_job(j)


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("-s", "--status", default="failed", show_default=True,
              type=click.Choice(["failed", "timeout", "maxretries", "abort", "cancel", "success", "interrupt"]),
              help="with no ID: requeue jobs with this status")
@click.option("-q", "--queue", help="with no ID: only this queue")
@click.option("--path", help="with no ID: only this task path")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def requeue(obj: Ctx, ids: tuple[str, ...], status: str, queue: str | None, path: str | None, as_json: bool) -> None:
    """Queue final jobs again: the IDs given, or all of a status (failed) by queue/path."""
    client = obj.client()
    if ids:
        done = client.requeue(*ids)
    else:
        if not queue and not path:
            raise click.UsageError("give job IDs, or --queue and/or --path to requeue all failed jobs of them")
        done = client.requeue_where(status, queue=queue, path=path)
    _out({"requeued": done}) if as_json else click.echo(f"requeued {len(done)} job(s)")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
@handle_errors
def cancel(obj: Ctx, ids: tuple[str, ...]) -> None:
    """Cancel waiting jobs (they never run)."""
    click.echo(f"cancelled {len(obj.client().cancel(*ids))} job(s)")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
@handle_errors
def abort(obj: Ctx, ids: tuple[str, ...]) -> None:
    """Abort running jobs (their worker kills them within about a second)."""
    click.echo(f"abort requested for {len(obj.client().abort(*ids))} job(s)")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def queues(obj: Ctx, as_json: bool) -> None:
    """Queue depths and job counts by status."""
    client = obj.client()
    depths, counts = client.store.queue_depths(), client.store.counts()
    if as_json:
        _out({"queues": depths, "counts": counts})
        return
    click.echo(f"{'QUEUE':20} {'READY':>8} {'DELAYED':>8}")
    for q, d in depths.items():
        click.echo(f"{q:20} {d['ready']:>8} {d['delayed']:>8}")
    click.echo("jobs by status: " + (", ".join(f"{s} {n}" for s, n in counts.items() if n) or "none"))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def workers(obj: Ctx, as_json: bool) -> None:
    """Live workers: host, pid, queues, running jobs with their stacks, jobs done, RSS."""
    client = obj.client()
    keys = client.broker.keys
    ids = sorted(client.redis.smembers(keys.workers))
    pipe = client.redis.pipeline(transaction=False)
    for wid in ids:
        pipe.hgetall(keys.worker(wid))
    entries = [_worker_entry(e) for e in pipe.execute() if e]
    if as_json:
        _out(entries)
        return
    if not entries:
        click.echo("no live workers")
    from .limits import fmt_bytes
    sups = {e["id"] for e in entries if e.get("kind") == "supervisor"}
    # supervisors first, each followed by its worker processes; then unsupervised workers
    order = sorted(entries, key=lambda e: (e.get("supervisor") if e.get("supervisor") in sups else
                                           e["id"] if e["id"] in sups else "~" + e["id"],
                                           e.get("kind") != "supervisor", e["id"]))
    for e in order:
        rss = int(e.get("rss_bytes", 0)) / 2**20
        if e.get("kind") == "supervisor":
            limits = (f"  mem-limit {fmt_bytes(e['mem_limit_bytes'])} hard {fmt_bytes(e['mem_hard_limit_bytes'])}"
                      if e.get("mem_limit_bytes") else "")
            kids = e.get("children", [])
            recycling = sum(1 for c in kids if c.get("recycling"))
            click.echo(f"{e['id']}  supervisor {e.get('state', '?')}  host {e['host']} pid {e['pid']}  "
                       f"processes {len(kids) - recycling}/{e.get('processes')}"
                       f"{f' (+{recycling} recycling)' if recycling else ''}  restarts {e.get('restarts', 0)}  "
                       f"kills {e.get('kills', 0)}  rss {rss:.1f} MiB{limits}  since {e['started_at']}")
            continue
        indent = "  " if e.get("supervisor") in sups else ""
        click.echo(f"{indent}{e['id']}  {e.get('state', '?')}  host {e['host']} pid {e['pid']}  queues {e['queues']}  "
                   f"running {len(e['running'])}/{e.get('greenlets', '?')}  done {e['jobs_done']}  "
                   f"rss {rss:.1f} MiB  since {e['started_at']}" + (f"  recycling: {e['recycle']}" if e.get("recycle") else ""))
        for r in e["running"]:
            click.echo(f"{indent}    {r['id']} {r['path']}  " + " <- ".join(r["stack"][:3]))


@cli.command()
@click.option("-n", "--limit", default=20, show_default=True, type=int, help="newest N events")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def events(obj: Ctx, limit: int, as_json: bool) -> None:
    """Recycles and kills of worker processes, newest first (RSS, limit, top growing jobs)."""
    from .job import iso
    from .limits import fmt_bytes
    client = obj.client()
    found = [json.loads(e) for e in client.redis.lrange(client.broker.keys.events, 0, max(0, limit - 1))]
    for e in found:
        e["at"] = iso(e.get("at"))
    if as_json:
        _out(found)
        return
    if not found:
        click.echo("no events")
    for e in found:
        ran = f"; crossed after {e['jobs']} jobs" if isinstance(e.get("jobs"), int) else ""
        click.echo(f"{e['at']}  {e['event']} ({e.get('reason')})  pid {e.get('pid')}: {e.get('detail')}{ran}")
        for g in e.get("top_growers", []):
            click.echo(f"    RSS grew {fmt_bytes(g['rss_growth_bytes'])} when job {g['job']} ended")
        if e.get("jobs") and isinstance(e["jobs"], list):
            click.echo(f"    running jobs requeued: {', '.join(e['jobs'])}")


def _worker_entry(e: dict[str, str]) -> dict[str, Any]:
    """A registry entry with numbers as numbers and times as ISO-8601 UTC."""
    from .job import iso
    out: dict[str, Any] = dict(e, running=json.loads(e.get("running", "[]")))
    if "children" in out:
        out["children"] = json.loads(out["children"])
    for k in ("pid", "greenlets", "jobs_done", "rss_bytes", "processes", "restarts", "kills",
              "mem_limit_bytes", "mem_hard_limit_bytes"):
        if out.get(k):
            out[k] = int(out[k])
    for k in ("started_at", "heartbeat_at"):
        if k in out:
            out[k] = iso(float(out[k]))
    out.pop("pid_started", None)
    for r in out["running"]:
        r["started_at"] = iso(r.get("started_at"))
    return out


@cli.command()
@click.option("-n", "--limit", type=int, help="only the first N files")
@click.option("-g", "--greenlets", default=10, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_obj
@handle_errors
def demo(obj: Ctx, limit: int | None, greenlets: int, as_json: bool) -> None:
    """Analyse every .py file of the installed standard library with a real worker."""
    from .demo import run_demo
    summary = run_demo(obj.settings(), limit=limit, greenlets=greenlets, quiet=as_json)
    if as_json:
        _out(summary)


@cli.group()
def embedded() -> None:
    """The embedded redis-server under .runtime/ (used when no Redis URL is set)."""


@embedded.command("status")
@click.pass_obj
def embedded_status(obj: Ctx) -> None:
    """Say whether the embedded server runs, and its URL."""
    from .embedded import EmbeddedRedis
    e = EmbeddedRedis(obj.settings().embedded_dir)
    url = e.url()
    click.echo(f"running at {url} (pid {e.pid()})" if url else "not running")


@embedded.command("stop")
@click.pass_obj
def embedded_stop(obj: Ctx) -> None:
    """Stop the embedded server (its data is kept in .runtime/)."""
    from .embedded import EmbeddedRedis
    click.echo("stopped" if EmbeddedRedis(obj.settings().embedded_dir).stop() else "was not running")


@cli.group()
def mongo() -> None:
    """The MongoDB job store (needs --mongodb or RUNTIME_MONGODB_URL)."""


def _mongo_sync(obj: Ctx) -> Any:
    from .errors import ConfigError
    client = obj.client()
    if client.mongo is None:
        raise ConfigError("no MongoDB URL: give --mongodb URL or set RUNTIME_MONGODB_URL")
    return client, client.mongo


@mongo.command("ensure-indexes")
@click.pass_obj
@handle_errors
def mongo_ensure_indexes(obj: Ctx) -> None:
    """Create every index of the job collection (those that exist are kept)."""
    client, sync = _mongo_sync(obj)
    names = client._call(sync.store.ensure_indexes)
    click.echo(f"indexes of {sync.store.jobs.full_name}: {', '.join(names)}")


@mongo.command("reconcile")
@click.option("--lag", "lag_s", type=float, default=0.0, show_default=True,
              help="leave changes younger than this many seconds to their writers")
@click.option("--full", is_flag=True,
              help="compare every job Redis holds, not only those changed since the last sweep "
                   "(refills a MongoDB that lost its data)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def mongo_reconcile(obj: Ctx, lag_s: float, full: bool, as_json: bool) -> None:
    """Repair Redis/MongoDB differences: copy to MongoDB what it lacks, queue again from
    MongoDB the jobs Redis lost (runs until nothing is left)."""
    client, sync = _mongo_sync(obj)
    total = {"checked": 0, "written": 0, "adopted": 0}
    if full:
        report = client._call(sync.reconcile_full)
        total["checked"], total["written"] = report.checked, report.written
    while True:
        report = client._call(sync.reconcile, lag_s)
        for k in total:
            total[k] += getattr(report, k)
        if not report.more:
            break
    _out(total) if as_json else click.echo(
        f"checked {total['checked']}, copied {total['written']} to MongoDB, queued again {total['adopted']} from MongoDB")
