"""Job statuses and the one table of allowed transitions.

Every status change in runtime is checked against :data:`TRANSITIONS`: in Python, and in
the Lua scripts, which get the table itself (``MOVES`` in ``runtime/broker/lua/_lib.lua``,
rendered by :func:`lua_moves`) and ask ``can_move(from, to)`` before every write. A final
status changes only through an explicit requeue, never through a late or stale attempt
(fencing by attempt number, see ``runtime/broker/lua/finish.lua``).
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
    MOVED = "moved"            # moved to another queue while waiting: it lives on as job ``moved_to``


FINAL: frozenset[Status] = frozenset(
    {Status.SUCCESS, Status.FAILED, Status.CANCEL, Status.ABORT, Status.TIMEOUT, Status.MAXRETRIES, Status.MOVED}
)

#: status -> statuses it may move to. Final statuses, and interrupt, move to queued only by
#: an explicit requeue (a fresh retry budget); started moves to queued when its worker is lost.
#: Moved is the end of a job id whose job went to another queue under a new id (a job's id
#: names its queue: runtime.broker.moves); it moves nowhere: requeuing it would run the
#: job twice, once under each id.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.STARTED, Status.CANCEL, Status.MOVED}),
    Status.RETRY: frozenset({Status.STARTED, Status.CANCEL, Status.MOVED}),
    Status.INTERRUPT: frozenset({Status.STARTED, Status.CANCEL, Status.QUEUED, Status.MOVED}),
    Status.STARTED: frozenset(
        {Status.SUCCESS, Status.FAILED, Status.RETRY, Status.ABORT, Status.TIMEOUT,
         Status.MAXRETRIES, Status.INTERRUPT, Status.QUEUED}
    ),
    Status.SUCCESS: frozenset({Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCEL: frozenset({Status.QUEUED}),
    Status.ABORT: frozenset({Status.QUEUED}),
    Status.TIMEOUT: frozenset({Status.QUEUED}),
    Status.MAXRETRIES: frozenset({Status.QUEUED}),
    Status.MOVED: frozenset(),
}


def allowed_from(dst: Status | str) -> frozenset[Status]:
    """The statuses that may move to ``dst``."""
    d = Status(dst)
    return frozenset(s for s, targets in TRANSITIONS.items() if d in targets)


#: Statuses from which a worker may claim (start) a job: waiting in a queue.
WAITING: frozenset[Status] = allowed_from(Status.STARTED)
#: Statuses of a running attempt, which may end (in success or otherwise).
RUNNING: frozenset[Status] = allowed_from(Status.SUCCESS)
#: Statuses a user may requeue: those that may move to queued, but a running job (its
#: worker moves it there when lost; a user aborts it instead).
REQUEUABLE: frozenset[Status] = allowed_from(Status.QUEUED) - {Status.STARTED}


def lua_set(statuses: frozenset[Status]) -> str:
    """``statuses`` as the body of a Lua set literal: ``['a'] = true, ...`` (sorted)."""
    return ", ".join(f"['{s.value}'] = true" for s in sorted(statuses))


def lua_moves() -> str:
    """:data:`TRANSITIONS` as the body of a flat Lua table literal, one entry a move:
    ``['queued>cancel'] = true, ['queued>started'] = true, ...`` (sorted, so stable)."""
    return ", ".join(f"['{src.value}>{dst.value}'] = true"
                     for src in sorted(TRANSITIONS) for dst in sorted(TRANSITIONS[src]))

#: The history entry of a claim: a worker took the job and its status became started. The
#: history's ``started`` entry, written with the attempt's outcome, says when it began
#: running (none when it never did: prefetched, then lost or handed back).
CLAIMED = "claimed"
