"""The states of a worker and the phases of a job it holds, as enums."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class WorkerState(StrEnum):
    """What a worker is doing, as its registry entry shows it (``runtime workers``)."""

    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"      # Redis or MongoDB unreachable: waiting to try again
    THROTTLED = "throttled"    # MongoDB behind: not claiming until it catches up
    STOPPING = "stopping"      # a stop was asked: claiming nothing more
    RECYCLING = "recycling"    # a limit was crossed: stopping, its replacement starting
    DRAINING = "draining"      # running jobs finish within the grace period
    STOPPED = "stopped"


class Phase(IntEnum):
    """Where a claimed job stands in its worker, in order; a prefetched job that never
    runs goes from PREFETCHED to DONE."""

    PREFETCHED = 0  # claimed, waiting for a free greenlet
    LAUNCHED = 1    # its greenlet is spawned (holds a slot) but has not started
    RUNNING = 2     # its greenlet runs it
    DONE = 3        # its outcome is waiting to be recorded
    ENDED = 4       # its greenlet ended and its slot is free
