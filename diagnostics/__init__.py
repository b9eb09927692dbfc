"""Observability middleware and tools for runtime: tracing, metrics, timing, memory, heap
diffs, profiles, logs, Sentry (each one runtime.middleware.Middleware), and leak hunting
in a REPL (:func:`hunt_leaks`, diagnostics.leaks)."""

from typing import Any


def hunt_leaks(*args: Any, **kwargs: Any) -> Any:
    """See :func:`diagnostics.leaks.hunt_leaks` (imported on first use: objgraph, guppy3)."""
    from .leaks import hunt_leaks as _hunt
    return _hunt(*args, **kwargs)
