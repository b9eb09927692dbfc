"""Observability middleware and tools for runtime: tracing, metrics, timing, memory, heap
diffs, profiles, logs, Sentry (each one runtime.middleware.Middleware), and leak hunting
in a REPL (:func:`hunt_leaks`, diagnostics.leaks; objgraph and guppy3 are imported only
when it runs)."""

from .leaks import LeakHuntError, LeakReport, hunt_leaks

__all__ = ["LeakHuntError", "LeakReport", "hunt_leaks"]
