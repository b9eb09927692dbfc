"""The worker: the claim loop, slots and prefetch, the recorder, the reaper, shutdown,
the heartbeat and the recycling limits.

``Worker`` is imported lazily: the supervisor imports the reaper from here without
loading gevent's hub machinery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .worker import Worker
        return Worker
    raise AttributeError(f"module 'runtime.worker' has no attribute {name!r}")
