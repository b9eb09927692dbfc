"""What a producer checks of a job before queueing it, when it can import the task.

``Client.queue_job``/``queue_jobs`` (and so ``runtime enqueue``) import the task's module
as a worker would and check the path (it names a task: not an unknown attribute, said
with a did-you-mean over the module's tasks, nor something imported into the module) and
the params against the task's signature (unknown names with a did-you-mean, missing
required ones). A failed check raises TaskNotFound, TaskNotAllowed or InvalidParams and
nothing is queued. What cannot be checked here is queued unchecked:

- the path's top-level package does not exist in this process (a producer in another
  codebase than its workers': the normal case), silently;
- its module is missing from a package that exists here, or fails to import here (a
  dependency only the workers have): with one warning per path, naming the cause.

Whether a worker serves the path (its ``task_modules``) is not checked: a producer does
not know its workers' settings. A path is judged "a task" under the client's
``task_modules`` and the module the path names (runtime.tasks.home_modules).
``check=False`` (``runtime enqueue --no-check``) skips all of it. Resolved tasks, and
paths that cannot be checked, are kept per client: after the first job of a path, a
check costs a dict look-up and two set comparisons (bench/throughput.py, enqueue).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidParams
from ..tasks import TaskSpec, home_modules, resolve

log = logging.getLogger("runtime.client")

#: Paths kept per client at most (their resolved task, or None: not checkable here).
MAX_KEPT = 10_000


class EnqueueCheck:
    """The producer's check of the jobs it queues (see the module's docstring).

    ``import_tasks=False``: only tasks whose module is already imported are checked (a
    worker's own client: a job's params must never make a worker import a module)."""

    def __init__(self, task_modules: Iterable[str], import_tasks: bool = True) -> None:
        self.task_modules = tuple(task_modules)
        self.import_tasks = import_tasks
        self._specs: dict[str, TaskSpec | None] = {}

    def spec(self, path: str) -> TaskSpec | None:
        """The task at ``path`` to check params against; None when it cannot be checked
        here. Raises TaskNotFound, TaskNotAllowed (not kept: asked again next time)."""
        try:
            return self._specs[path]
        except KeyError:
            pass
        spec = self._resolve(path)
        if len(self._specs) < MAX_KEPT:
            self._specs[path] = spec
        return spec

    def params(self, spec: TaskSpec, params: Mapping[str, Any]) -> None:
        """Raise InvalidParams when ``params`` do not bind to the task's signature."""
        problem = spec.params_problem(params)
        if problem:
            raise InvalidParams(problem)

    def _resolve(self, path: str) -> TaskSpec | None:
        module_name = path.rpartition(".")[0]
        valid = bool(module_name) and all(p.isidentifier() for p in path.split("."))
        if valid and module_name not in sys.modules and (not self.import_tasks or not _importable(path, module_name)):
            return None
        return resolve(path, home_modules(path, self.task_modules))


def _importable(path: str, module_name: str) -> bool:
    """Import the module of ``path``; False when it cannot be (logged, but for a package
    that does not exist here)."""
    try:
        importlib.import_module(module_name)
        return True
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            if "." in missing:  # the package above it exists here: a typo, or code newer than ours
                log.warning("%s queued unchecked: no module named %r here%s", path, missing, _sibling(missing))
            return False
        error: Exception = exc
    except Exception as exc:  # noqa: BLE001 - the workers report it; the producer goes on
        error = exc
    log.warning("%s queued unchecked: importing %s failed here (%s: %s)", path, module_name,
                type(error).__name__, error)
    return False


def _sibling(missing: str) -> str:
    """`` (did you mean pkg.work?)`` for a module ``pkg.wrok`` missing from package ``pkg``."""
    parent, _, name = missing.rpartition(".")
    package = sys.modules.get(parent)
    names = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", None) or [])]
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {parent}.{close[0]}?)" if close else ""
