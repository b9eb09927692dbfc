"""Queue again, from their MongoDB documents, jobs that Redis lost (the MongoDB store's
reconcile sweep, runtime.store.mongo.sync): one ``adopt.lua`` call per queue, every key of
a call in that queue's hash slot (runtime.broker.keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .broker import RedisBroker

#: One job to adopt: (id, queue, priority, fields JSON, history JSON, note); see adopt.lua.
Adoptee = tuple[str, str, int, str, str, str]


def adopt(broker: RedisBroker, jobs: Sequence[Adoptee]) -> list[str]:
    """Queue again jobs Redis lost, each at the ``due_at`` of its fields (delayed while that
    is to come, else ready now), in one round trip; returns the ids adopted (those Redis
    still has are left). Their queues are named in {p}:queues first."""
    by_queue: dict[str, list[Adoptee]] = {}
    for job in jobs:
        by_queue.setdefault(job[1], []).append(job)
    if not by_queue:
        return []
    calls: list[tuple[Any, ...]] = [("SADD", broker.keys.queues, *by_queue)]
    for queue, group in by_queue.items():
        keys = list(broker.keys.queue_keys(queue)[:3])
        args: list[Any] = [len(group)]
        for job in group:
            keys.append(broker.keys.job(job[0]))
            args += job
        calls.append(broker.call("adopt", keys, args))
    return [str(i) for reply in broker.calls(calls)[1:] for i in reply]
