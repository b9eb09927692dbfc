"""Tasks: the code a job runs, addressed by its canonical dotted path.

A task is either a function taking params as keyword arguments::

    @task(timeout_s=30, max_retries=3)
    def word_count(path: str) -> dict: ...

or a class whose ``run(self, params)`` takes the params dict (a new instance per job)::

    @task(max_retries=2)
    class WordCount:
        def run(self, params): ...

``@task`` is optional; it declares options, and an option nobody understands fails at
import with a hint (``profile=True`` becomes known once a middleware registers it).
:func:`resolve` imports a path only when it lies under one of the configured
``task_modules`` (a security rule: params never choose arbitrary code).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParams, TaskNotAllowed, TaskNotFound, TaskOptionError
from .resets import on_reset
from .settings import Settings, load_settings

#: Options understood by the core. Middleware add theirs with register_task_options().
_KNOWN_OPTIONS: dict[str, str] = {
    "timeout_s": "seconds the job may run before it ends with status timeout",
    "max_retries": "how many times a failing job is retried before status maxretries",
    "retry_on": "exception classes that cause a retry (default: Exception when max_retries > 0)",
    "retry_delay_s": "first retry delay, seconds (doubles each retry, with jitter)",
    "retry_backoff": "factor between successive retry delays (default 2)",
    "retry_max_delay_s": "cap on one retry delay, seconds",
}


def register_task_options(options: dict[str, str]) -> None:
    """Let a middleware declare the task options it understands (name -> meaning)."""
    _KNOWN_OPTIONS.update(options)


_middleware_loaded = False


def _load_configured_middleware() -> None:
    """Import the modules of the configured middleware, so the task options their classes
    declare are known (a task module may be imported before any worker or client built
    its chain). Only the modules are imported here: a class registers its options when
    its module defines it (``Middleware.__init_subclass__``)."""
    global _middleware_loaded
    if _middleware_loaded:
        return
    _middleware_loaded = True
    paths = list(Settings().middleware)  # the built-ins: always known, even when switched off
    try:
        paths += [p for p in load_settings().middleware if p not in paths]
    except Exception:  # noqa: BLE001 - a bad setting is reported where settings are used
        pass
    for path in paths:
        try:
            importlib.import_module(path.rpartition(".")[0])
        except Exception:  # noqa: BLE001 - reported when the chain is built
            pass


def _check_options(options: dict[str, Any], where: str) -> None:
    if any(name not in _KNOWN_OPTIONS for name in options):
        _load_configured_middleware()
    for name in options:
        if name not in _KNOWN_OPTIONS:
            close = difflib.get_close_matches(name, list(_KNOWN_OPTIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(_KNOWN_OPTIONS))}"
            raise TaskOptionError(f"{where}: unknown task option {name!r}{hint}")


def task(fn: Any = None, **options: Any) -> Any:
    """Declare a task's options: ``@task`` or ``@task(timeout_s=10, max_retries=3)``.

    Raises TaskOptionError at import for an unknown option.
    """
    def wrap(target: Any) -> Any:
        _check_options(options, getattr(target, "__qualname__", repr(target)))
        target.__runtime_options__ = dict(options)
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
    #: (names it accepts, names it requires) when every parameter may be passed by keyword
    #: and none is ``*args``/``**kwargs``: then params bind when their keys are within the
    #: first and cover the second, checked without ``Signature.bind`` (~8 µs a job)
    keywords: tuple[frozenset[str], frozenset[str]] | None = None

    @property
    def timeout_s(self) -> float | None:
        return self.options.get("timeout_s")

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
        if self.signature is not None:
            try:
                self.signature.bind(**params)
            except TypeError as exc:
                raise InvalidParams(f"params do not match {self.path}{self.signature}: {exc}") from None
        return lambda: fn(**params)


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


def resolved(path: str) -> bool:
    """Has the task at ``path`` been imported in this process (its options are known)?"""
    return path in _cache


def _remember_missing(path: str, message: str) -> TaskNotFound:
    """TaskNotFound(message) to raise, answered again for NOT_FOUND_TTL_S seconds."""
    _not_found[path] = (time.monotonic() + NOT_FOUND_TTL_S, message)
    return TaskNotFound(message)


def _allowed(path: str, modules: Iterable[str]) -> bool:
    return any(path == m or path.startswith(m + ".") for m in modules)


def _keywords(sig: inspect.Signature | None) -> tuple[frozenset[str], frozenset[str]] | None:
    """TaskSpec.keywords for a function's signature (None: bind with the signature)."""
    if sig is None:
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind not in kinds for p in sig.parameters.values()):
        return None
    return (frozenset(sig.parameters),
            frozenset(n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty))


#: (path, task_modules) -> spec, for paths resolved and allowed under those task_modules
_resolved: dict[tuple[str, Any], TaskSpec] = {}


_cache: dict[str, TaskSpec] = {}
#: path -> (monotonic time until which, message): a path that failed to import is not tried
#: again for NOT_FOUND_TTL_S (a failing import costs ~300 µs; a bad job may come in bulk)
_not_found: dict[str, tuple[float, str]] = {}
NOT_FOUND_TTL_S = 5.0


@on_reset
def forget_tasks() -> None:
    """Forget resolved and missing tasks (they are resolved again on next use)."""
    _resolved.clear()
    _cache.clear()
    _not_found.clear()


def resolve(path: str, task_modules: Iterable[str]) -> TaskSpec:
    """The task at ``path`` (``package.module.name``), imported only if allowed.

    Raises TaskNotAllowed when ``path`` is outside ``task_modules`` (nothing is imported),
    TaskNotFound when the module or attribute does not exist or is not callable.
    Resolved tasks are cached per process.
    """
    try:
        return _resolved[path, task_modules]
    except (KeyError, TypeError):  # not yet; or task_modules is a list (not hashable)
        pass
    spec = _cache.get(path)
    if spec is not None and _allowed(path, task_modules):
        _remember(path, task_modules, spec)
        return spec
    if not isinstance(path, str) or not path or not all(p.isidentifier() for p in path.split(".")):
        raise TaskNotFound(f"{path!r} is not a dotted task path like 'package.module.function'")
    if not _allowed(path, task_modules):
        raise TaskNotAllowed(
            f"task path {path!r} is outside the allowed task modules ({', '.join(task_modules) or 'none'}); "
            f"add its module to task_modules (--tasks / RUNTIME_TASK_MODULES)"
        )
    known_bad = _not_found.get(path)
    if known_bad is not None and known_bad[0] > time.monotonic():
        raise TaskNotFound(known_bad[1])
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise TaskNotFound(f"{path!r} names no module; use 'module.function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _remember_missing(path, f"unknown task path {path!r}: no module named {exc.name!r}") from None
    target = getattr(module, attr, None)
    if target is None:
        raise _remember_missing(path, f"unknown task path {path!r}: module {module_name!r} has no {attr!r}")
    options = dict(getattr(target, "__runtime_options__", {}))
    if inspect.isclass(target):
        if not callable(getattr(target, "run", None)):
            raise TaskNotFound(f"task class {path!r} has no run(self, params) method")
        spec = TaskSpec(path, target, True, options, None)
    elif callable(target):
        try:
            sig: inspect.Signature | None = inspect.signature(target)
        except (TypeError, ValueError):
            sig = None
        spec = TaskSpec(path, target, False, options, sig, _keywords(sig))
    else:
        raise TaskNotFound(f"task path {path!r} names a {type(target).__name__}, not a function or class")
    _cache[path] = spec
    _remember(path, task_modules, spec)
    return spec


def _remember(path: str, task_modules: Any, spec: TaskSpec) -> None:
    if isinstance(task_modules, (tuple, frozenset)) and len(_resolved) < 10_000:
        _resolved[path, task_modules] = spec
