"""``runtime check``: what a worker checks at start, without starting one (CI, deploys)."""

from __future__ import annotations

import inspect
from typing import Any

import click

from ..binding import plain
from .app import Ctx, cli, echo, handle_errors, out


def _plain(value: Any) -> Any:
    """A task option's value as JSON shows it (exception classes by name)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if inspect.isclass(value):
        return value.__qualname__ if value.__module__ == "builtins" else f"{value.__module__}.{value.__qualname__}"
    return value


@cli.command()
@click.option("--tasks", "task_modules", help="task modules to check [default: the task_modules setting]")
@click.option("--json", "as_json", is_flag=True, help="print the tasks as JSON")
@click.pass_obj
@handle_errors
def check(obj: Ctx, task_modules: str | None, as_json: bool) -> None:
    """Check settings, middleware, task modules and schedules (@periodic and runtime.toml's
    [schedules]) as a worker does at start, and list the tasks it would serve and the
    schedules it would run. Exit 0, or 2 with the error (a module that fails to import:
    its traceback). Needs no Redis."""
    from ..catalog import load_tasks
    from ..middleware import Chain
    settings = obj.settings(task_modules=task_modules)
    chain = Chain.from_settings(settings)  # a bad middleware setting is refused, as at worker start
    served = load_tasks(settings.task_modules)
    found = chain.check(served)  # schedules of @periodic and runtime.toml: refused as at worker start
    tasks: list[dict[str, Any]] = [{"path": path, "kind": "class" if spec.is_class else "function",
              "params": "(params)" if spec.is_class or spec.signature is None else plain(spec.signature),
              "options": {k: _plain(v) for k, v in spec.options.items()}}
             for path, spec in served.tasks.items()]
    if as_json:
        out({"task_modules": list(served.task_modules), "modules": list(served.modules), "tasks": tasks,
             "middleware": found})
        return
    for t in tasks:
        options = "  ".join(f"{k}={v}" for k, v in t["options"].items())
        echo(f"{t['path']}{t['params']}" + (f"  [{options}]" if options else ""))
    for line in (line for lines in found.values() for line in lines):
        echo(line)
    echo(f"ok: {len(tasks)} task{'s' if len(tasks) != 1 else ''} in {len(served.modules)} "
               f"module{'s' if len(served.modules) != 1 else ''} of {', '.join(served.task_modules)}")
