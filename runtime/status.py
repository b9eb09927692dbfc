"""Job statuses and the one table of allowed transitions.

Every status change in runtime, in Python and in the Lua scripts (which receive their
allowed "from" sets from :func:`allowed_from`), is checked against :data:`TRANSITIONS`.
A final status changes only through an explicit requeue, never through a late or stale
attempt (fencing by attempt number, see ``runtime/lua/finish.lua``).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"          # waiting in a queue (new, or requeued after a lost worker)
    STARTED = "started"        # claimed by a worker and running
    SUCCESS = "success"        # returned a JSON result
    FAILED = "failed"          # raised, bad input, or its worker died max_lost times
    RETRY = "retry"            # failed an attempt, scheduled to run again after a backoff
    CANCEL = "cancel"          # cancelled while waiting; never ran (again)
    ABORT = "abort"            # aborted while running
    TIMEOUT = "timeout"        # ran past its timeout_s
    MAXRETRIES = "maxretries"  # asked to retry once more than max_retries allows
    INTERRUPT = "interrupt"    # interrupted by a worker shutdown; requeued at once


FINAL: frozenset[Status] = frozenset(
    {Status.SUCCESS, Status.FAILED, Status.CANCEL, Status.ABORT, Status.TIMEOUT, Status.MAXRETRIES}
)

#: Statuses from which a worker may claim (start) a job.
WAITING: frozenset[Status] = frozenset({Status.QUEUED, Status.RETRY, Status.INTERRUPT})

#: status -> statuses it may move to. Final statuses move only by an explicit requeue.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.STARTED, Status.CANCEL}),
    Status.RETRY: frozenset({Status.STARTED, Status.CANCEL}),
    Status.INTERRUPT: frozenset({Status.STARTED, Status.CANCEL}),
    Status.STARTED: frozenset(
        {Status.SUCCESS, Status.FAILED, Status.RETRY, Status.ABORT, Status.TIMEOUT,
         Status.MAXRETRIES, Status.INTERRUPT, Status.QUEUED}  # QUEUED: its worker was lost
    ),
    Status.SUCCESS: frozenset({Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCEL: frozenset({Status.QUEUED}),
    Status.ABORT: frozenset({Status.QUEUED}),
    Status.TIMEOUT: frozenset({Status.QUEUED}),
    Status.MAXRETRIES: frozenset({Status.QUEUED}),
}


def can_move(src: Status | str, dst: Status | str) -> bool:
    """True when ``src -> dst`` is in :data:`TRANSITIONS`."""
    return Status(dst) in TRANSITIONS[Status(src)]


def allowed_from(dst: Status | str) -> list[str]:
    """The statuses that may move to ``dst``, sorted (passed to Lua as ARGV)."""
    d = Status(dst)
    return sorted(s.value for s, targets in TRANSITIONS.items() if d in targets)
