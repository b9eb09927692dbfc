"""Waiting for jobs to end: notified by the finisher, never polling.

A client registers a private list on the jobs (``wait.lua``, atomic with the finishers:
no lost wake-up) and blocks on it (BLPOP below redis-py's command layer). The finisher
pushes each job's document (or its bare id when large) as it ends. After a broken wait (a
lost connection, a restart, a failover) the client registers again, which tells it which
jobs ended meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence

import redis

from ..broker import MAX_BLOCK_S
from ..broker.waiters import next_notice, register_waiter, waiter_keys
from ..errors import BrokerUnavailable, JobNotFound, WaitTimeout
from ..job import Job
from ..status import Status
from .parts import Calls

#: Shortest BLPOP timeout sent, seconds (Redis rounds below 1 ms to 0 = block forever).
MIN_BLOCK_S = 0.01


#: Most moves to another queue followed for one job (a job moved back and forth).
MAX_HOPS = 100


def iter_done(client: Calls, ids: Sequence[str], timeout_s: float | None = None) -> Iterator[Job]:
    """Yield each job of ``ids`` as it becomes final (those already final first); a job
    moved to another queue is followed to its new id (see :func:`iter_pairs`)."""
    for _, job in iter_pairs(client, ids, timeout_s):
        yield job


def iter_pairs(client: Calls, ids: Sequence[str], timeout_s: float | None = None) -> Iterator[tuple[str, Job]]:
    """Yield (id of ``ids``, its Job) as each job becomes final (those already final
    first). A job moved to another queue (status moved) is followed to its new id
    (``moved_to``), whose Job is yielded when final.

    Notified by the finisher (no polling); after a broken wait (a lost connection, a
    restart, a failover) it asks Redis again which jobs are final, so a notification
    lost with the connection is not waited for. Raises WaitTimeout (``.pending``: the
    ids waited on, new ids of moved jobs among them) after ``timeout_s`` seconds,
    JobNotFound for an id that does not exist (also one gone since, e.g. Redis restarted
    empty), BrokerUnavailable."""
    wanted = list(dict.fromkeys(ids))
    token = os.urandom(8).hex()
    keys: list[str] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ttl = timeout_s if timeout_s is not None else 86_400
    pending = set(wanted)
    # the id waited on -> (the ids of ``ids`` it stands for, moves followed to it)
    asked: dict[str, tuple[tuple[str, ...], int]] = {i: ((i,), 0) for i in wanted}
    registered = False
    broken = 0  # waits broken in a row
    while pending:
        if not registered:  # first, again after a broken wait or a move: which are final by now?
            keys = sorted(set(keys) | set(waiter_keys(client.broker, token, sorted(pending))))
            try:
                already = _noticed(client, client.call(register_waiter, client.broker, token, sorted(pending), ttl))
            except BrokerUnavailable:
                if not broken or broken >= 3:
                    raise
                broken += 1  # Redis restarting after a broken wait: give it a moment
                time.sleep(0.5 * broken)
                continue
            ended, followed = _arrived(pending, asked, already)
            registered = not followed  # a moved job: registered on its new id next
            yield from ended
            continue
        remaining = MAX_BLOCK_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            client.call(client.redis.delete, *keys)
            raise WaitTimeout(f"{len(pending)} of {len(wanted)} jobs not final after {timeout_s} s",
                              sorted(pending))
        try:
            entry = _next(client, keys, remaining)
        except _Broken as exc:
            # a notification may have been lost with the connection (or Redis restarted
            # empty, or failed over): register again, which returns the jobs that ended
            # meanwhile and raises BrokerUnavailable if Redis stays unreachable
            broken += 1
            if broken > 3:
                raise BrokerUnavailable(f"Redis unavailable: {exc.__cause__}") from None
            registered = False
            continue
        broken = 0
        if entry is None:
            continue
        ended, followed = _arrived(pending, asked, _noticed(client, [entry]))
        registered = not followed
        yield from ended


def _arrived(pending: set[str], asked: dict[str, tuple[tuple[str, ...], int]],
             entries: Sequence[tuple[str, Job | None]]) -> tuple[list[tuple[str, Job]], bool]:
    """(the (id asked for, Job) of the jobs of ``entries`` that ended, was a moved one
    among them: waited on under its new id now). Raises JobNotFound for a missing one."""
    ended = []
    followed = False
    for job_id, job in entries:
        if job is None:
            raise JobNotFound(f"no job {job_id!r} ({_gone(asked, job_id)})")
        if job_id not in pending:
            continue
        if _follow(pending, asked, job):
            followed = True
        else:
            ended += [(first, job) for first in asked[job_id][0]]
    return ended, followed


def _follow(pending: set[str], asked: dict[str, tuple[tuple[str, ...], int]], job: Job) -> bool:
    """Take ``job`` (final, waited on) out of ``pending``; a moved one is waited on under its
    new id instead (True), up to MAX_HOPS moves."""
    pending.discard(job.id)
    if job.status != Status.MOVED or not job.moved_to:
        return False
    firsts, hops = asked.pop(job.id)
    if hops >= MAX_HOPS:
        raise JobNotFound(f"job {firsts[0]!r} was moved over {MAX_HOPS} times; wait for its id now, "
                          f"{job.moved_to!r}")
    if job.moved_to in pending:  # waited on under both ids
        firsts = asked[job.moved_to][0] + firsts
    asked[job.moved_to] = (firsts, hops + 1)
    pending.add(job.moved_to)
    return True


def _gone(asked: dict[str, tuple[tuple[str, ...], int]], job_id: str) -> str:
    """Why waited-on ``job_id`` may be missing, for JobNotFound."""
    first = asked.get(job_id, ((job_id,), 0))[0][0]
    if first != job_id:
        return f"job {first} was moved there; its document expired"
    return "never queued, or its document expired"


class _Broken(Exception):
    """The blocked wait broke (its cause: a lost connection, a timeout, UNBLOCKED)."""


def _next(client: Calls, keys: Sequence[str], remaining_s: float) -> str | None:
    """The next entry on one of ``keys`` within ``remaining_s`` (at most MAX_BLOCK_S), or None.
    Raises _Broken when the wait broke."""
    try:
        # Redis reads a timeout under 1 ms as 0, "block forever": never send one
        return next_notice(client.broker, keys, min(max(remaining_s, MIN_BLOCK_S), MAX_BLOCK_S))
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
        if isinstance(exc, redis.ResponseError) and not str(exc).startswith("UNBLOCKED"):
            raise
        raise _Broken() from exc


def _noticed(client: Calls, entries: Sequence[str]) -> list[tuple[str, Job | None]]:
    """(id, Job or None if it exists nowhere) for each entry wait.lua or a notification
    gives: the document as JSON ``[id, hash fields]`` (finish.lua, wait.lua),
    or the bare id (cancel, reap, a large document, a missing job), whose documents
    are read from the stores together, in one round trip."""
    bare = [e for e in entries if not e.startswith("[")]
    read = dict(zip(bare, client.live_or_stored(bare))) if bare else {}
    out = []
    for entry in entries:
        if entry in read:
            out.append((entry, read[entry]))
            continue
        job_id, flat = json.loads(entry)[:2]
        out.append((job_id, Job.from_hash(dict(zip(flat[::2], flat[1::2])), job_id=job_id)))
    return out

