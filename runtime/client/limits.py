"""Checks of what a producer passes: the priority range, the longest delay, queue names,
job ids (no I/O)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from ..errors import InvalidParams
from ..queuenames import queue_name_problem

PRIORITY_RANGE = (-100, 100)
#: Longest delay accepted, seconds (10 years): beyond, timestamps leave the platform's range.
MAX_DELAY_S = 10 * 365 * 86_400.0

def check_priority(priority: object, none: bool = False) -> None:
    """Raise InvalidParams unless ``priority`` is an int in :data:`PRIORITY_RANGE` (or
    None, with ``none``)."""
    low, high = PRIORITY_RANGE
    if not (none and priority is None) and (not isinstance(priority, int) or not low <= priority <= high):
        raise InvalidParams(f"priority must be an int in [{low}, {high}], got {priority!r}")


def check_queue(queue: str | None, none: bool = False) -> None:
    """Raise InvalidParams unless ``queue`` is a queue name (runtime.queuenames; or None,
    with ``none``)."""
    if not (none and queue is None) and (problem := queue_name_problem(queue)):
        raise InvalidParams(problem)


def delay_s(delay: float | None, eta: datetime | float | None) -> float:
    """The delay in seconds of ``delay`` (s) or ``eta`` (aware datetime or UNIX s), at most
    :data:`MAX_DELAY_S`. Raises InvalidParams."""
    if delay is not None and eta is not None:
        raise InvalidParams("give delay or eta, not both")
    if eta is not None:
        if isinstance(eta, datetime):
            if eta.tzinfo is None:
                raise InvalidParams("eta must be timezone-aware (e.g. datetime.now(timezone.utc))")
            eta = eta.timestamp()
        return delay_s(max(0.0, float(eta) - time.time()), None)
    d = float(delay or 0.0)
    if not 0 <= d <= MAX_DELAY_S:  # also refuses NaN and infinities
        raise InvalidParams(f"delay must be within [0, {MAX_DELAY_S:.0f}] seconds, got {d}")
    return d


def check_ids(ids: Iterable[object]) -> list[str]:
    """``ids`` as a list of job ids. Raises InvalidParams for one string given instead of
    several (its letters would be taken as ids), and for an id that is not a string, with
    a hint for a list given to a method that takes the ids as separate arguments
    (``client.abort(*ids)``)."""
    if isinstance(ids, (str, bytes)):
        raise InvalidParams(f"job ids must be a list of strings, got one string {ids!r}")
    out: list[str] = []
    for job_id in ids:
        if isinstance(job_id, (list, tuple, set, frozenset)):
            raise InvalidParams(f"job ids go as separate arguments (cancel, abort, requeue and move take "
                                f"*ids: client.abort(*ids)), got a {type(job_id).__name__} among them")
        if not isinstance(job_id, str):
            raise InvalidParams(f"job ids must be strings, got {type(job_id).__name__} {job_id!r}")
        out.append(job_id)
    return out
