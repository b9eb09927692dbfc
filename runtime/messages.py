"""What crosses between the producer, the broker and the worker, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .status import Status


@dataclass(slots=True)
class NewJob:
    """What enqueue writes: id, path, params already encoded as JSON, queue, priority,
    the delay before it may start (seconds, 0 = now), and what producer middleware
    attached (``meta``, JSON: the trace context...)."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    delay_s: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Claimed:
    """A claimed job as the worker needs it. Times are UNIX seconds of the Redis clock.
    ``alone``: it must run with nothing beside it (it was running when a worker died)."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    attempt: int
    retries: int
    lost: int
    queued_at: float
    due_at: float
    started_at: float
    meta: dict[str, Any]
    alone: bool = False


@dataclass(slots=True)
class Outcome:
    """The end of one attempt of a job of ``queue``: new status, its number (ttl_s when
    final, delay_s for a retry, unused otherwise), a history note, and fields to store
    (strings)."""

    id: str
    queue: str
    attempt: int
    status: Status
    number: float = 0.0
    note: str = ""
    fields: dict[str, str] = field(default_factory=dict)
