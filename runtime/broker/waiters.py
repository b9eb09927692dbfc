"""Waiting for jobs to end, on the broker's side: a waiter's notify lists (one per queue of
the jobs it waits on, in that queue's hash slot: runtime.broker.keys), registered on the
jobs by ``wait.lua``, and the blocking read of them (runtime.client.waiting uses these)."""

from __future__ import annotations

from collections.abc import Sequence

from ..job import queue_of
from .broker import RedisBroker
from .direct import blpop


def waiter_keys(broker: RedisBroker, token: str, ids: Sequence[str]) -> list[str]:
    """The notify lists of waiter ``token`` for the queues of ``ids``, one per queue."""
    return [broker.keys.waiter(q, token) for q in sorted({q for q in map(queue_of, ids) if q is not None})]


def register_waiter(broker: RedisBroker, token: str, ids: Sequence[str], ttl_s: float) -> list[str]:
    """Ask to be told on the lists of waiter ``token`` (:func:`waiter_keys`) when ``ids``
    end, one ``wait.lua`` call per queue, in one round trip. Returns one entry per job
    already final or missing: its document as JSON ``[id, hash fields]``, or its bare id
    (missing, large, or past the first 20 of a queue); see wait.lua."""
    by_queue: dict[str, list[str]] = {}
    nameless = []  # an id that names no queue names no job: missing (read as such by the caller)
    for i in ids:
        q = queue_of(i)
        if q is None:
            nameless.append(i)
        else:
            by_queue.setdefault(q, []).append(i)
    calls = []
    for queue, group in by_queue.items():
        keys = [broker.keys.waiter(queue, token)]
        for i in group:
            keys += (broker.keys.job(i), broker.keys.notify(i))
        calls.append(broker.call("wait", keys, (max(1, int(ttl_s) + 1), *group)))
    return nameless + [entry for reply in (broker.calls(calls) if calls else []) for entry in reply]


def next_notice(broker: RedisBroker, keys: Sequence[str], timeout_s: float) -> str | None:
    """Block up to ``timeout_s`` (> 0) for the next entry on the waiter lists ``keys``
    (see :func:`register_waiter`); None if none came.

    Raises ConnectionError / TimeoutError, or ResponseError when Redis unblocked the call
    (``UNBLOCKED``, a failover): an entry may have been lost with the connection, so the
    caller asks again which jobs are final rather than block again."""
    reply = blpop(broker.redis, keys, timeout_s)
    if isinstance(reply, Exception):
        raise reply
    return None if reply is None else str(reply[1])
