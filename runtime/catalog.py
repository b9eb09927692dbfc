"""The tasks a process serves: every configured task module imported at start.

A worker (and ``runtime check``) imports each module of ``task_modules`` and, for a
package, every module under it (pkgutil; ``__main__`` modules are skipped), so that a
module that fails to import, or a ``@task`` with a bad option, stops it at start with the
real traceback, instead of failing the first job that names it. :func:`load_tasks`
returns the tasks found, by path; :func:`summary` is the one line a worker logs.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import TaskImportError
from .tasks import TaskSpec, module_tasks, resolve

#: Task paths named in full in the worker's start line; beyond, it says how many more.
SUMMARY_NAMES = 50


@dataclass(frozen=True)
class Served:
    """The task modules configured, the modules imported from them, and the tasks they
    offer (path -> spec; a task imported from one task module into another is listed
    once, where it was defined)."""

    task_modules: tuple[str, ...]
    modules: tuple[str, ...]
    tasks: dict[str, TaskSpec]

    def caps(self) -> tuple[Any, ...]:
        """The concurrency caps and rate limits of the tasks, as claim.lua reads them
        (runtime.caps.caps_args)."""
        from .caps import caps_args
        return caps_args(self.tasks)


def _import(name: str) -> ModuleType:
    """Module ``name``. Raises TaskImportError: one line when it does not exist, with the
    import's traceback when it raised (a missing dependency included)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise TaskImportError(f"task module {name!r} not found (no module named {exc.name!r}); "
                                  f"check task_modules (--tasks / RUNTIME_TASK_MODULES)") from None
        error: BaseException = exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a task module may raise anything at import
        error = exc  # sys.exit() at import too: a worker must not stop as if all were well
    raise TaskImportError(f"task module {name!r} failed to import: {type(error).__name__}: {error}",
                          _traceback(error))


def _traceback(error: BaseException) -> str:
    """The traceback of an import that raised, without the frames of the import machinery."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<frozen importlib") and f.filename != importlib.__file__]
    return ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(error)))


def _walk(top: ModuleType) -> list[ModuleType]:
    """``top`` and, for a package, every module under it, imported (sorted by name)."""
    found = [top]
    path = getattr(top, "__path__", None)
    if path is None:
        return found
    for info in sorted(pkgutil.iter_modules(path, top.__name__ + "."), key=lambda i: i.name):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        found += _walk(_import(info.name))
    return found


def load_tasks(task_modules: Iterable[str]) -> Served:
    """Import every module of ``task_modules`` (packages walked) and resolve the tasks
    they offer. Raises TaskImportError (a ConfigError: exit code 2) for a module that does
    not exist or fails to import; TaskOptionError, raised by ``@task`` at import, comes
    wrapped in it with its traceback."""
    configured = tuple(task_modules)
    if not configured:
        raise TaskImportError("no task modules: a worker serves the tasks of the modules given by "
                              "task_modules (--tasks / RUNTIME_TASK_MODULES), e.g. --tasks myapp.tasks")
    modules: dict[str, ModuleType] = {}
    for name in configured:
        for module in _walk(_import(name)):
            modules.setdefault(module.__name__, module)
    tasks: dict[str, TaskSpec] = {}
    seen: dict[int, str] = {}
    for name, module in modules.items():
        for attr, target in module_tasks(module, configured).items():
            path = f"{name}.{attr}"
            home = getattr(target, "__module__", None) == name
            if id(target) in seen and not home:
                continue  # listed where it was defined (or first seen)
            if id(target) in seen:
                del tasks[seen[id(target)]]
            seen[id(target)] = path
            tasks[path] = resolve(path, configured)
    return Served(configured, tuple(modules), dict(sorted(tasks.items())))


def summary(served: Served) -> str:
    """One line: ``serving 12 tasks from tasks_example: tasks_example.files.WordCount, ...``."""
    names = list(served.tasks)
    shown = ", ".join(names[:SUMMARY_NAMES]) + (f", ... ({len(names) - SUMMARY_NAMES} more)"
                                                if len(names) > SUMMARY_NAMES else "")
    noun = "task" if len(names) == 1 else "tasks"
    return f"serving {len(names)} {noun} from {', '.join(served.task_modules) or 'no module'}: {shown or '-'}"
