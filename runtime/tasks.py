"""Tasks: the code a job runs, addressed by its canonical dotted path.

A task is either a function taking params as keyword arguments::

    @task(timeout_s=30, max_retries=3)
    def word_count(path: str) -> dict: ...

or a class whose ``run(self, params)`` takes the params dict (a new instance per job)::

    @task(max_retries=2)
    class WordCount:
        def run(self, params): ...

``@task`` declares options, and an option nobody understands (or a value out of range)
fails at import with a hint (``profile=True`` becomes known once a middleware registers
it). Only tasks are tasks: :func:`resolve` imports a path only when it lies under one of
the configured ``task_modules`` (params never choose arbitrary code), and the attribute
it names must be a function or class marked ``@task``, or one *defined* in a task module
(its ``__module__`` under ``task_modules``) with a public name. ``from os import system``
in a task module does not make ``mymod.system`` a task.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .binding import keywords, params_problem
from .caps import key_problem
from .errors import InvalidParams, TaskError, TaskNotAllowed, TaskNotFound, TaskOptionError
from .options import check_options, register_task_options
from .resets import on_reset

__all__ = ["TaskSpec", "chosen", "forget_tasks", "home_modules", "marked", "module_tasks", "not_a_task", "origin",
           "register_task_options", "resolve", "resolved", "split_patterns", "task"]

def task(fn: Any = None, **options: Any) -> Any:
    """Mark a task and declare its options: ``@task`` or ``@task(timeout_s=10, max_retries=3)``.

    A marked function or class is a task wherever it was defined (``send = task(lib.send)``
    in a task module makes ``mymod.send`` one). Raises TaskOptionError at import for an
    unknown option or a bad value.
    """
    def wrap(target: Any) -> Any:
        checked = dict(options)
        where = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
        check_options(checked, where)
        problem = key_problem(checked, target)
        if problem:
            raise TaskOptionError(f"{where}: {problem}")
        target.__runtime_options__ = checked  # also marks it a task (see not_a_task)
        return target

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True)
class TaskSpec:
    """A resolved task: its path, how to call it, and its options."""

    path: str
    target: Any
    is_class: bool
    options: dict[str, Any]
    signature: inspect.Signature | None
    #: runtime.binding.keywords of the signature: params that bind are told apart by two
    #: set comparisons, without ``Signature.bind`` (~8 µs a job)
    keywords: tuple[frozenset[str], frozenset[str]] | None = None

    @property
    def timeout_s(self) -> float | None:
        return self.options.get("timeout_s")

    def limit(self, default_s: float) -> float | None:
        """Seconds its jobs may run: its ``timeout_s``, ``default_s`` when it declares
        none, None (no timeout) when it declares ``timeout_s=None``."""
        limit: float | None = self.options.get("timeout_s", default_s)
        return limit

    @property
    def keep(self) -> str:
        """What Redis keeps of a job that succeeded (task option ``keep``): "full",
        "compact" or "none"."""
        return str(self.options.get("keep", "full"))

    @property
    def max_retries(self) -> int:
        return int(self.options.get("max_retries", 0))

    def should_retry(self, exc: BaseException) -> bool:
        """True when ``exc`` is one the task asked to retry on (never bad params)."""
        if self.max_retries <= 0 or isinstance(exc, InvalidParams):
            return False
        retry_on = self.options.get("retry_on", (Exception,))
        return isinstance(exc, tuple(retry_on))

    def retry_delay_s(self, retries: int) -> float:
        """Exponential backoff with jitter: base * backoff**retries, capped, times U(0.5, 1).

        ``retries`` = retries already made (0 for the first). "Equal jitter" keeps at least
        half the delay, so retries never bunch at zero.
        """
        base = float(self.options.get("retry_delay_s", 1.0))
        factor = float(self.options.get("retry_backoff", 2.0))
        cap = float(self.options.get("retry_max_delay_s", 600.0))
        return min(cap, base * factor ** retries) * random.uniform(0.5, 1.0)

    def bind(self, params: dict[str, Any]) -> Callable[[], Any]:
        """A no-argument callable running the task with ``params``.

        Raises InvalidParams when params do not match the signature (never retried).
        """
        if self.is_class:
            instance = self.target()
            return lambda: instance.run(params)
        fn = self.target
        kw = self.keywords
        if kw is not None and isinstance(params, dict) and kw[1] <= params.keys() <= kw[0]:
            return lambda: fn(**params)
        if not isinstance(params, dict):
            raise InvalidParams(f"params must be a JSON object, got {type(params).__name__}")
        problem = self.params_problem(params)
        if problem:
            raise InvalidParams(problem)
        return lambda: fn(**params)

    def params_problem(self, params: Any) -> str | None:
        """Why ``params`` do not bind to the task's signature, in one line (unknown names
        with a did-you-mean, missing required ones); None when they bind or the task is a
        class (its ``run`` takes the params dict)."""
        kw = self.keywords
        if kw is not None and kw[1] <= params.keys() <= kw[0]:
            return None
        if self.signature is None or self.is_class:
            return None
        return params_problem(self.path, self.signature, params)


def split_patterns(raw: str | None) -> list[str]:
    """Comma-separated fnmatch patterns of task paths (a setting) as a list."""
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def chosen(path: str, patterns: list[str], option: str) -> bool:
    """Is the task at ``path`` chosen for a feature: a pattern matches it, or the task
    declares ``option=True``? (--profile, --trace-memory and their task options)

    Looks only at tasks already resolved (the worker and run_task resolve first, under the
    task_modules rule): this never imports anything."""
    import fnmatch
    if patterns and any(fnmatch.fnmatchcase(path, p) for p in patterns):
        return True
    spec = _cache.get(path)
    return spec is not None and bool(spec.options.get(option))


def task_option(path: str, option: str) -> Any:
    """The value the task at ``path`` (resolved already) declares for ``option``, or None."""
    spec = _cache.get(path)
    return None if spec is None else spec.options.get(option)


def declared(option: str) -> bool:
    """Does any task resolved in this process declare ``option=True``?"""
    return any(spec is not None and spec.options.get(option) for spec in list(_cache.values()))


def resolved(path: str) -> bool:
    """Has the task at ``path`` been imported in this process (its options are known)?"""
    return path in _cache


def _allowed(path: str, modules: Iterable[str]) -> bool:
    return any(path == m or path.startswith(m + ".") for m in modules)


def marked(target: Any) -> bool:
    """Was ``target`` itself marked ``@task`` (not merely a subclass of a marked class)?
    functools.wraps copies the mark to a wrapper, as it copies ``__module__``."""
    return "__runtime_options__" in getattr(target, "__dict__", ())


def origin(target: Any) -> str:
    """Where ``target`` was defined: ``module.qualname`` (``posix.system``)."""
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', getattr(target, '__name__', type(target).__name__))}"


def not_a_task(path: str, target: Any, task_modules: Iterable[str]) -> TaskError | None:
    """Why ``target``, found at ``path``, is no task under ``task_modules`` (the error to
    raise), or None when it is one: a function (any callable) or a class with a ``run``
    method, that is marked ``@task`` or defined in a module under ``task_modules`` with a
    name not starting with ``_``."""
    if inspect.isclass(target):
        if not callable(getattr(target, "run", None)):
            return TaskNotFound(f"task class {path!r} has no run(self, params) method")
    elif not callable(target):
        return TaskNotFound(f"task path {path!r} names a {type(target).__name__}, not a function or class")
    if marked(target):
        return None
    module_name, _, attr = path.rpartition(".")
    if attr.startswith("_"):
        return TaskNotAllowed(f"{path!r} is not a task: its name is private (starts with '_'); "
                              f"mark it @task to make it one")
    defined_in = getattr(target, "__module__", None)
    if isinstance(defined_in, str) and _allowed(defined_in, task_modules):
        return None
    return TaskNotAllowed(
        f"{path!r} is not a task: it is {origin(target)}, imported into {module_name!r} rather than "
        f"defined in a task module ({', '.join(task_modules) or 'none'}); mark it @task to make it one")


def module_tasks(module: ModuleType, task_modules: Iterable[str]) -> dict[str, Any]:
    """The tasks ``module`` offers under ``task_modules``: attribute name -> target."""
    modules = tuple(task_modules)
    return {name: target for name, target in list(vars(module).items())
            if not isinstance(target, ModuleType) and not_a_task(f"{module.__name__}.{name}", target, modules) is None}


def _spec(path: str, target: Any) -> TaskSpec:
    options = dict(getattr(target, "__runtime_options__", {}))
    if inspect.isclass(target):
        return TaskSpec(path, target, True, options, None)
    try:
        sig: inspect.Signature | None = inspect.signature(target)
    except (TypeError, ValueError):
        sig = None
    return TaskSpec(path, target, False, options, sig, keywords(sig))


#: (path, task_modules) -> spec, for paths resolved and allowed under those task_modules
_resolved: dict[tuple[str, Any], TaskSpec] = {}
#: path -> spec, of every task resolved in this process (under some task_modules)
_cache: dict[str, TaskSpec] = {}
#: path -> (monotonic time until which, the error): a path that failed to import is not
#: tried again for NOT_FOUND_TTL_S (a failing import costs ~300 µs; a bad job may come in bulk)
_not_found: dict[str, tuple[float, TaskError]] = {}
NOT_FOUND_TTL_S = 5.0


@on_reset
def forget_tasks() -> None:
    """Forget resolved and missing tasks (they are resolved again on next use)."""
    _resolved.clear()
    _cache.clear()
    _not_found.clear()


def _remember_missing(path: str, exc: TaskError) -> TaskError:
    """``exc`` to raise, answered again (a copy, with the same cause) for NOT_FOUND_TTL_S."""
    _not_found[path] = (time.monotonic() + NOT_FOUND_TTL_S, exc)
    return exc


def _again(exc: TaskError) -> TaskError:
    """A fresh copy of a remembered error (raising one instance again and again would
    grow its traceback)."""
    copy = type(exc)(str(exc), exc.elsewhere)
    copy.__cause__ = exc.__cause__
    return copy


def _import(path: str, module_name: str) -> ModuleType:
    """The module of task ``path``. Raises TaskNotFound: ``elsewhere`` when the module
    itself (or a package above it) does not exist; else the import raised (any other
    missing module included) and that exception, message and traceback, is the cause."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _remember_missing(path, TaskNotFound(f"unknown task path {path!r}: no module named "
                                                       f"{exc.name!r}", elsewhere=True)) from None
        error: Exception = exc
    except Exception as exc:  # noqa: BLE001 - kept whole as the cause
        error = exc
    failed = TaskNotFound(f"task module {module_name!r} failed to import: {type(error).__name__}: {error}")
    failed.__cause__ = error
    raise _remember_missing(path, failed)


def resolve(path: str, task_modules: Iterable[str]) -> TaskSpec:
    """The task at ``path`` (``package.module.name``), imported only if allowed.

    Raises TaskNotAllowed when ``path`` is outside ``task_modules`` (nothing is imported;
    ``elsewhere``) or names no task (see :func:`not_a_task`); TaskNotFound when the module
    or attribute does not exist (``elsewhere``; an unknown attribute with a did-you-mean
    over the module's tasks), the module failed to import (its exception is the cause), or
    the attribute is neither a function nor a class with ``run``. Cached per process.
    """
    try:
        return _resolved[path, task_modules]
    except (KeyError, TypeError):  # not yet; or task_modules is a list (not hashable)
        pass
    spec = _cache.get(path)
    if spec is not None and _allowed(path, task_modules) and not_a_task(path, spec.target, task_modules) is None:
        _remember(path, task_modules, spec)
        return spec
    if not isinstance(path, str) or not path or not all(p.isidentifier() for p in path.split(".")):
        raise TaskNotFound(f"{path!r} is not a dotted task path like 'package.module.function'")
    if not _allowed(path, task_modules):
        raise TaskNotAllowed(
            f"task path {path!r} is outside the allowed task modules ({', '.join(task_modules) or 'none'}); "
            f"add its module to task_modules (--tasks / RUNTIME_TASK_MODULES)", elsewhere=True)
    known_bad = _not_found.get(path)
    if known_bad is not None and known_bad[0] > time.monotonic():
        raise _again(known_bad[1])
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise TaskNotFound(f"{path!r} names no module; use 'module.function'")
    module = _import(path, module_name)
    target = getattr(module, attr, None)
    if target is None:
        close = difflib.get_close_matches(attr, sorted(module_tasks(module, task_modules)), n=1)
        hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
        raise _remember_missing(path, TaskNotFound(f"unknown task path {path!r}: module {module_name!r} has no "
                                                   f"{attr!r}{hint}", elsewhere=True))
    refused = not_a_task(path, target, task_modules)
    if refused is not None:
        raise refused
    spec = _spec(path, target)
    _cache[path] = spec
    _remember(path, task_modules, spec)
    return spec


def _remember(path: str, task_modules: Any, spec: TaskSpec) -> None:
    if isinstance(task_modules, (tuple, frozenset)) and len(_resolved) < 10_000:
        _resolved[path, task_modules] = spec


def home_modules(path: str, task_modules: Iterable[str]) -> tuple[str, ...]:
    """The task modules under which a process that may import any task (run_task, a
    producer checking a job) judges ``path``: its own ``task_modules`` and the module
    ``path`` names. What that module defines is a task there; what it imports, even from
    its own package, unmarked, is not (unless defined under ``task_modules``: the rule
    of a worker with those task modules)."""
    home = path.rpartition(".")[0] if isinstance(path, str) else ""
    return tuple(task_modules) + ((home,) if home and home not in task_modules else ())
