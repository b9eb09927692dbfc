"""The shape of a project's ``runtime.toml``: settings at the top level or in a
``[runtime]`` table, and ``[schedules.NAME]`` tables (runtime.scheduler.config). Anything
else is refused in one line naming the file and, when a known name is close, the one
meant: a misspelled table would otherwise be ignored (a schedule that never fires).
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .queuenames import did_you_mean

#: The tables of runtime.toml that hold no setting: the settings (when not at the top
#: level) and the schedules.
TABLES = ("runtime", "schedules")


def read_config(path: Path, setting_names: Collection[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, schedules) of the runtime.toml at ``path``: the settings as written
    (``[runtime]``, or the top level without it), not coerced, and the ``[schedules]``
    table (name -> table). Raises ConfigError, one line: the file cannot be read or
    parsed, an unknown setting or table, a setting outside ``[runtime]`` when the file
    has one, or ``schedules`` inside ``[runtime]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    schedules = data.pop("schedules", {})
    if not isinstance(schedules, dict):
        raise ConfigError(f"{path}: schedules must be tables [schedules.NAME], got {schedules!r}")
    if "runtime" in data:
        settings = data.pop("runtime")
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: runtime must be the table [runtime] of settings, got {settings!r}")
        for key, value in data.items():
            if key in setting_names:
                raise ConfigError(f"{path}: setting {key!r} is outside [runtime], which the file has: "
                                  f"move it into [runtime]")
            _unknown(path, key, value, setting_names)
    else:
        settings = data
    if "schedules" in settings and "schedules" not in setting_names:
        raise ConfigError(f"{path}: schedules inside [runtime]: write each as a top-level table "
                          f"[schedules.NAME], after the settings")
    for key, value in settings.items():
        if key not in setting_names:
            _unknown(path, key, value, setting_names)
    return settings, schedules


def _unknown(path: Path, key: str, value: Any, setting_names: Collection[str]) -> None:
    """Raise ConfigError for ``key`` (of ``value``), which names nothing runtime.toml may hold."""
    if isinstance(value, dict):
        raise ConfigError(f"{path}: unknown table [{key}]{did_you_mean(key, [*TABLES, *setting_names])}: "
                          f"runtime.toml holds settings ([runtime] or top-level) and [schedules.NAME] tables")
    raise ConfigError(f"{path}: unknown setting {key!r}{did_you_mean(key, [*setting_names, *TABLES])}")
