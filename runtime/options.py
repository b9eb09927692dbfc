"""Task options: the names the core and middleware understand, and the core's rules for
their values, checked where ``@task`` is applied (at import).

An option nobody understands fails with a hint (``max_retry`` -> ``max_retries``); a
middleware declares its own (``task_options``, registered when its class is defined), and
the configured middleware's modules are imported before an unknown name is refused, so
``profile=True`` is known even in a module imported before any worker started.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from .caps import CAP_OPTIONS, cap_problem
from .errors import TaskOptionError
from .messages import KEEP
from .settings import Settings, load_settings

#: Options understood by the core. Middleware add theirs with register_task_options().
_KNOWN_OPTIONS: dict[str, str] = {
    "timeout_s": "seconds the job may run before it ends with status timeout",
    "max_retries": "how many times a failing job is retried before status maxretries",
    "retry_on": "exception classes that cause a retry (default: Exception when max_retries > 0)",
    "retry_delay_s": "first retry delay, seconds (doubles each retry, with jitter)",
    "retry_backoff": "factor between successive retry delays (default 2)",
    "retry_max_delay_s": "cap on one retry delay, seconds",
    "keep": "what Redis keeps of a successful job: 'full' (default: its document for ttl_s['success']), "
            "'compact' (its status, times, params and result: no history, report, logs or artifacts) "
            "or 'none' (nothing, once waiting clients have it: for high-rate jobs nobody reads)",
    **CAP_OPTIONS,
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


def check_options(options: dict[str, Any], where: str) -> None:
    """Check the names and values of ``options`` of the task named ``where`` (normalises
    ``retry_on`` to a tuple, in place). Raises TaskOptionError with a hint."""
    if any(name not in _KNOWN_OPTIONS for name in options):
        _load_configured_middleware()
    for name in options:
        if name not in _KNOWN_OPTIONS:
            close = difflib.get_close_matches(name, list(_KNOWN_OPTIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(_KNOWN_OPTIONS))}"
            raise TaskOptionError(f"{where}: unknown task option {name!r}{hint}")
    _check_values(options, where)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check_values(options: dict[str, Any], where: str) -> None:
    """The core options' values (normalises ``retry_on`` to a tuple). Raises TaskOptionError."""
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "timeout_s": (lambda v: v is None or (_number(v) and 0 < v < float("inf")),
                      "a number of seconds > 0, finite (None: no timeout)"),
        "max_retries": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
        "retry_delay_s": (lambda v: _number(v) and v >= 0, "a number of seconds >= 0"),
        "retry_max_delay_s": (lambda v: _number(v) and v >= 0, "a number of seconds >= 0"),
        "retry_backoff": (lambda v: _number(v) and v > 0, "a number > 0"),
        "keep": (lambda v: v in KEEP, "'full', 'compact' or 'none'")}
    for name, (ok, what) in rules.items():
        if name in options and not ok(options[name]):
            raise TaskOptionError(f"{where}: task option {name} must be {what}, got {options[name]!r}")
    for name in CAP_OPTIONS:
        problem = cap_problem(name, options[name]) if name in options else None
        if problem:
            raise TaskOptionError(f"{where}: task option {name} must be {problem}, got {options[name]!r}")
    if "retry_on" in options:
        value = options["retry_on"]
        classes = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if not classes or not all(inspect.isclass(c) and issubclass(c, BaseException) for c in classes):
            raise TaskOptionError(f"{where}: task option retry_on must be an exception class or a tuple "
                                  f"of them, got {value!r}")
        options["retry_on"] = classes
