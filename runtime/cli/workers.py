"""Commands about workers and live state: worker, workers, events, queues."""

from __future__ import annotations

import sys

import click

from ..client import Client
from ..client.known import unknown_queue
from ..errors import ExitCode
from ..process import is_supervised_child
from ..queuenames import queue_name_problem
from .app import SECONDS, Ctx, cli, echo, fail, handle_errors, out
from .format import print_events, print_queues, print_workers
from .logformat import configure


@cli.command()
@click.option("-q", "--queues", help="queues to take jobs from, first ones first [default: default]")
@click.option("-g", "--greenlets", type=int, help="jobs run at once in this process [default 25]")
@click.option("--tasks", "task_modules", help="module prefixes tasks may be imported from [default tasks_example]")
@click.option("--grace", "grace_s", type=float, help="seconds running jobs may finish after SIGTERM [default 30]")
@click.option("--prefetch", type=click.IntRange(min=0),
              help="jobs claimed ahead of free greenlets, 0 or more [default: as many as --greenlets]")
@click.option("--trace-memory", is_flag=False, flag_value="*", default=None, metavar="[PATTERNS]",
              help="store a heap diff of every job (or of task paths matching PATTERNS); they run alone")
@click.option("--sentry-dsn", help="report job errors to this Sentry DSN [env SENTRY_DSN]")
@click.option("--profile", is_flag=False, flag_value="*", default=None, metavar="[PATTERNS]",
              help="store a pyinstrument profile of every job (or of task paths matching PATTERNS)")
@click.option("--otlp-endpoint", help="send traces over OTLP/HTTP here, e.g. http://localhost:4318 [env OTEL_EXPORTER_OTLP_ENDPOINT]")
@click.option("--metrics-port", type=int, help="serve job metrics for Prometheus on this port (127.0.0.1; metrics_host)")
@click.option("--mongodb", "mongodb_url", metavar="URL", help="keep job documents in this MongoDB too [env RUNTIME_MONGODB_URL]")
@click.option("-p", "--processes", metavar="N|MIN:MAX",
              help="worker processes under one supervisor that restarts them [default 1, unsupervised]; "
                   "MIN:MAX: as many as the queue latency asks for (autoscaling)")
@click.option("--autoscale-target", "target_s", type=SECONDS,
              help="with --processes MIN:MAX: the age of the next job to run that the supervisor scales to "
                   "stay under, seconds, more than 0 [default 5]")
@click.option("--autoscale-warmup", "warmup_s", type=SECONDS,
              help="with --processes MIN:MAX: seconds after a step up before another [default 10]")
@click.option("--autoscale-cooldown", "cooldown_s", type=SECONDS,
              help="with --processes MIN:MAX: seconds of latency under half the target before one process "
                   "fewer (an idle one stops) [default 60]")
@click.option("--mem-limit", "mem_limit_bytes", metavar="SIZE",
              help="soft memory limit per process, e.g. 512M (K, M, G): over it a worker recycles without losing a job")
@click.option("--mem-hard-limit", "mem_hard_limit_bytes", metavar="SIZE",
              help="the supervisor kills a worker above this and requeues its jobs [default soft + 25%, at least +64M]")
@click.option("--max-jobs", type=int, help="recycle a worker process after N jobs")
@click.option("--max-time", "max_time_s", type=float, metavar="SECONDS", help="recycle a worker process after SECONDS")
@click.option("--burst", is_flag=True, help="exit once no job is ready, running or delayed")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one object per line, with job id, task, status, duration and trace id fields")
@click.pass_obj
@handle_errors
def worker(obj: Ctx, /, burst: bool, log_level: str, log_format: str, processes: str | None,
           target_s: float | None, warmup_s: float | None, cooldown_s: float | None,
           **flags: str | int | float | None) -> None:
    """Run jobs (gevent is monkey-patched first thing).

    With --processes, --mem-limit, --mem-hard-limit, --max-jobs or --max-time, a
    supervisor runs the worker processes and replaces each one that recycles or dies
    (runtime.supervisor).
    """
    configure(log_level, log_format)
    from ..supervisor.autoscale import make_policy, parse_processes
    n, scale = parse_processes(processes)
    policy = make_policy(scale, target_s, warmup_s, cooldown_s)
    settings = obj.settings(processes=n, **flags)
    if settings.supervised and not is_supervised_child():
        from ..supervisor import Supervisor
        sys.exit(Supervisor(settings, burst=burst, autoscale=policy).run())
    from ..worker.worker import Worker
    sys.exit(Worker.from_settings(settings).serve(burst=burst))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def queues(ctx: click.Context, as_json: bool) -> None:
    """Queue depths and job counts by status; `queues pause|resume NAME`."""
    if ctx.invoked_subcommand is None:
        data = ctx.obj.client(middleware=False).reader.queues()
        out(data) if as_json else print_queues(data)


@queues.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="pause a queue no job, worker or setting has named yet")
@click.pass_obj
@handle_errors
def pause(obj: Ctx, name: str, force: bool) -> None:
    """Pause queue NAME: workers stop claiming its jobs within a heartbeat; running jobs
    finish, queued ones stay queued."""
    registry = _known_queue(obj, name, force, "(--force to pause it anyway)").broker.registry
    changed = registry.pause(name)
    echo(f"queue {name} paused" + ("" if changed else " (it was already)"))


@queues.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def resume(obj: Ctx, name: str) -> None:
    """Resume queue NAME: workers claim its jobs again within a heartbeat."""
    client = _known_queue(obj, name, False, "(and it is not paused: nothing to resume)")
    changed = client.broker.registry.resume(name)
    echo(f"queue {name} resumed" + ("" if changed else " (it was not paused)"))


def _known_queue(obj: Ctx, name: str, force: bool, hint: str) -> Client:
    """The client, once ``name`` is a queue name that jobs, workers or the settings have
    used, or that is paused (or ``force``): runtime.client.known. Exits with USAGE for a
    bad name, NOT_FOUND for an unknown one (saying the closest known name, then ``hint``)."""
    problem = queue_name_problem(name)
    if problem:
        fail(problem, ExitCode.USAGE)
    client: Client = obj.client(middleware=False)
    unknown = None if force else unknown_queue(client, name)
    if unknown:
        fail(f"{unknown} {hint}", ExitCode.NOT_FOUND)
    return client


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def workers(obj: Ctx, as_json: bool) -> None:
    """Live workers: host, pid, queues, running jobs with their stacks, jobs done, RSS."""
    entries = obj.client(middleware=False).reader.workers()
    out(entries) if as_json else print_workers(entries)


@cli.command()
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1), help="newest N events")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def events(obj: Ctx, limit: int, as_json: bool) -> None:
    """Recycles and kills of worker processes, newest first (RSS, limit, top growing jobs)."""
    found = obj.client(middleware=False).reader.events(limit)
    out(found) if as_json else print_events(found)
