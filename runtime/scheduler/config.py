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

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..schedule import Schedule, make_schedule
from ..settings import CONFIG_FILE, project_root
from ..tasks import TaskSpec

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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    tables: dict[str, Any] = data.get("schedules", {})
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
