"""Where schedules are declared: ``@periodic`` on the tasks a worker serves, and the
``[schedules.NAME]`` tables of the project's ``runtime.toml``::

    [schedules.nightly-report]
    task = "myapp.tasks.report"
    cron = "0 2 * * *"            # or every = 300 (seconds)
    tz = "Europe/Paris"
    params = {kind = "full"}
    queue = "reports"
    priority = 5
    missed = "once"               # "skip", "once" or N (catch up at most N)
    grace_s = 120
    overlap = "skip"              # or "allow"
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from ..catalog import Served
from ..configfile import read_config
from ..errors import ConfigError, TaskError
from ..schedule import Schedule, make_schedule
from ..settings import CONFIG_FILE, Settings, project_root
from ..tasks import TaskSpec, home_modules, resolve

#: The names of the settings (what else runtime.toml may hold, runtime.configfile).
SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))
#: Keys of a ``[schedules.NAME]`` table besides ``task``.
TABLE_KEYS = ("params", "queue", "priority", "cron", "every", "tz", "missed", "grace_s", "overlap")


def code_schedules(tasks: dict[str, TaskSpec]) -> list[Schedule]:
    """The ``@periodic`` schedules of ``tasks`` (path -> spec, a worker's served tasks)."""
    out = []
    for path, spec in tasks.items():
        for name, options in getattr(spec.target, "__dict__", {}).get("__runtime_schedules__", ()):
            out.append(make_schedule(name or path, path, **options))
    return out


def file_schedules(config_file: str | os.PathLike[str] | None = None) -> list[Schedule]:
    """The schedules of ``config_file`` (default: the project's runtime.toml, if any).
    Raises ConfigError naming the file and the schedule."""
    path = Path(config_file) if config_file else (project_root() or Path()) / CONFIG_FILE
    if not path.is_file():
        return []
    _, tables = read_config(path, SETTING_NAMES)
    out = []
    for name, table in tables.items():
        if not isinstance(table, dict) or not isinstance(table.get("task"), str):
            raise ConfigError(f"{path}: [schedules.{name}] needs task = \"package.module.function\"")
        unknown = sorted(set(table) - {"task", *TABLE_KEYS})
        if unknown:
            raise ConfigError(f"{path}: [schedules.{name}] has unknown keys {unknown} (known: task, "
                              f"{', '.join(TABLE_KEYS)})")
        options = {k: v for k, v in table.items() if k != "task"}
        try:
            out.append(make_schedule(name, table["task"], **options))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return out


def all_schedules(tasks: dict[str, TaskSpec], extra: Iterable[Schedule] = ()) -> list[Schedule]:
    """Code and file schedules (and ``extra``); a name used twice raises ConfigError."""
    out: dict[str, Schedule] = {}
    for s in [*code_schedules(tasks), *file_schedules(), *extra]:
        if s.name in out:
            raise ConfigError(f"two schedules are named {s.name!r} ({out[s.name].path} and {s.path}); "
                              f"give one a name= of its own")
        out[s.name] = s
    return list(out.values())


def checked_schedules(served: Served) -> list[Schedule]:
    """The schedules a worker serving ``served`` runs (:func:`all_schedules`), each one's
    task path and params checked as ``queue_job`` checks a job's, except that the task's
    module must import here (a schedule is the project's own: a path no process of it
    can import would bounce on every fire). Raises ConfigError, one line naming the
    schedule."""
    schedules = all_schedules(served.tasks)
    for s in schedules:
        spec = served.tasks.get(s.path)
        if spec is None:
            try:
                spec = resolve(s.path, home_modules(s.path, served.task_modules))
            except TaskError as exc:
                raise ConfigError(f"schedule {s.name!r}: {exc}") from None
        problem = spec.params_problem(s.params)
        if problem:
            raise ConfigError(f"schedule {s.name!r}: {problem}")
    return schedules


def describe_schedule(s: Schedule) -> str:
    """One line for ``runtime check``: ``schedule tick: every 2 s -> mod.tick on queue default``."""
    when = f"cron {s.cron!r} {s.tz}" if s.cron else f"every {s.every_s:g} s"
    return f"schedule {s.name}: {when} -> {s.path} on queue {s.queue}"
