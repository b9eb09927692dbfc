"""Commands about schedules: schedules (list), schedules pause|resume|run-now|forget NAME."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from .app import Ctx, cli, echo, handle_errors, out
from .format import ago


def _when(ts: object) -> str:
    """UNIX time ``ts`` as a UTC date, "-" for None, or as it is when it is not a time a
    date can show (a year past 9999, text): a stored value never stops the listing."""
    if ts is None:
        return "-"
    if not isinstance(ts, (int, float)):
        return str(ts)
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return str(ts)


def _ago(ts: object) -> str:
    """:func:`ago` of ``ts``, "-" when it is not a number."""
    return ago(ts) if isinstance(ts, (int, float)) else "-"


def _state(obj: Ctx) -> Any:
    from ..scheduler.state import ScheduleState
    return ScheduleState(obj.client(middleware=False).broker)


def print_schedules(data: dict[str, Any]) -> None:
    """One block per schedule, then the schedulers and their liveness (``runtime schedules``)."""
    if not data["schedules"]:
        echo("no schedules (none declared with @periodic or [schedules.NAME] has been run by a worker yet)")
    for s in data["schedules"]:
        late = f"  NOT FIRING: {s['late_s']:.0f} s past a fire time" if s["late_s"] else ""
        if s["status"] == "late" and not s["run_by"]:
            late += f"  (its scheduler is wedged: {', '.join(s['wedged_by'])} registered, not syncing)"
        removed = "  (no live scheduler runs it: runtime schedules forget NAME deletes it)" \
            if s["status"] == "removed" else ""
        echo(f"{s['name']}  {s['status']}{late}{removed}  task {s['task']}  queue {s['queue']}  {s['when']}")
        echo(f"    next {_when(s['next_fire'])}   last {_when(s['last_fire'])} ({_ago(s['last_fire'])}, "
             f"{s['last_status'] or '-'})   last job {s['last_job'] or '-'} ({s['last_job_status'] or '-'})"
             f"   missed {s['missed']}  overlap-skipped {s['overlap']}")
    alive = data["schedulers"]
    if not alive and data["wedged"]:
        echo(f"NO SCHEDULER SYNCING: {len(data['wedged'])} registered but wedged, nothing fires "
             f"(a job holding its worker's CPU?)")
    elif not alive:
        echo("NO LIVE SCHEDULER: nothing fires (no live worker runs the scheduler)")
    else:
        echo(f"schedulers alive: {len(alive)}")
    for e in data["scheduler_states"]:
        why = {"alive": "", "stale": "  (registered, but its scheduler has not synced: wedged?)",
               "dead": "  (not in the worker registry: its worker is gone)"}[e["state"]]
        runs = "?" if e["schedules"] is None else ", ".join(e["schedules"]) or "none"
        echo(f"    {e['worker']}  {e['state']}{why}  synced {ago(e['synced_at'])}  runs {runs}")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedules(ctx: click.Context, as_json: bool) -> None:
    """Schedules with their next and last fire, last job and status, and the workers
    running the scheduler; a schedule that does not fire on time says so."""
    if ctx.invoked_subcommand is None:
        _list(ctx.obj, as_json)


@handle_errors
def _list(obj: Ctx, as_json: bool) -> None:
    from ..scheduler.report import describe
    data = describe(_state(obj))
    out(data) if as_json else print_schedules(data)


@schedules.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def pause(obj: Ctx, name: str) -> None:
    """Pause schedule NAME: its fire times pass without a job (not caught up on resume)."""
    _state(obj).pause(name)
    echo(f"schedule {name} paused")


@schedules.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def resume(obj: Ctx, name: str) -> None:
    """Resume schedule NAME from its next fire time."""
    _state(obj).pause(name, paused=False)
    echo(f"schedule {name} resumed")


@schedules.command("run-now")
@click.argument("name")
@click.pass_obj
@handle_errors
def run_now(obj: Ctx, name: str) -> None:
    """Queue schedule NAME's job now (its fire times are unchanged); prints the job id.
    Refused (exit 7) for a removed schedule."""
    from ..scheduler.report import run_now as queue_now
    echo(queue_now(obj.client(), name))


@schedules.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def forget(obj: Ctx, name: str) -> None:
    """Delete schedule NAME, removed from the code, from the listing (refused, exit 7,
    while a live scheduler runs it)."""
    from ..scheduler.report import forget as drop
    drop(_state(obj), name)
    echo(f"schedule {name} forgotten")
