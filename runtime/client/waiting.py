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
from .parts import Calls

#: Shortest BLPOP timeout sent, seconds (Redis rounds below 1 ms to 0 = block forever).
MIN_BLOCK_S = 0.01


def iter_done(client: Calls, ids: Sequence[str], timeout_s: float | None = None) -> Iterator[Job]:
    """Yield each job of ``ids`` as it becomes final (those already final first).

    Notified by the finisher (no polling); after a broken wait (a lost connection, a
    restart, a failover) it asks Redis again which jobs are final, so a notification
    lost with the connection is not waited for. Raises WaitTimeout (with ``.pending``)
    after ``timeout_s`` seconds, JobNotFound for an id that does not exist (also one
    gone since, e.g. Redis restarted empty), BrokerUnavailable.
    """
    wanted = list(dict.fromkeys(ids))
    token = os.urandom(8).hex()
    keys = waiter_keys(client.broker, token, wanted)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ttl = timeout_s if timeout_s is not None else 86_400
    pending = set(wanted)
    registered = False
    broken = 0  # waits broken in a row
    while pending:
        if not registered:  # first, and again after a broken wait: which are final by now?
            try:
                already = _noticed(client, client.call(register_waiter, client.broker, token, sorted(pending), ttl))
            except BrokerUnavailable:
                if not broken or broken >= 3:
                    raise
                broken += 1  # Redis restarting after a broken wait: give it a moment
                time.sleep(0.5 * broken)
                continue
            registered = True
            for job_id, job in already:
                if job is None:
                    raise JobNotFound(f"no job {job_id!r} (never queued, or its document expired)")
                if job_id in pending:
                    pending.discard(job_id)
                    yield job
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
        [(job_id, job)] = _noticed(client, [entry])
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (its document expired)")
        if job_id in pending:
            pending.discard(job_id)
            yield job


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
        out.append((job_id, Job.from_hash(dict(zip(flat[::2], flat[1::2])))))
    return out

