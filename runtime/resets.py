"""The process-wide state of runtime and its middleware, and the one way to reset it.

A few things live once per process on purpose: resolved tasks (runtime.tasks), the
default client, run_task's chains, the tracer provider, the profiler's sampler, the log
capture. Each module that keeps such state registers a function that forgets it
(:func:`on_reset`); :func:`reset` calls them all (the test suite does between tests).
"""

from __future__ import annotations

from collections.abc import Callable

_resets: list[Callable[[], None]] = []


def on_reset(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn`` to be called by :func:`reset` (usable as a decorator)."""
    _resets.append(fn)
    return fn


def reset() -> None:
    """Forget every registered piece of process-wide state."""
    for fn in _resets:
        fn()
