"""The supervisor: N worker processes kept running, recycled, and killed past a hard
ceiling (the watchdog). A plain process: no gevent, no tracer."""

from .supervisor import Supervisor

__all__ = ["Supervisor"]
