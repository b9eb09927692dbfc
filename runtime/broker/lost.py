"""The jobs of lost workers, before the reaper takes them back (RedisBroker.reap): which
ran, which were only claimed, and which must run alone next time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .broker import RedisBroker
from .replies import listed


class Lost(NamedTuple):
    """The jobs of lost workers (:func:`mark_lost`): those they ran or may have run,
    those they had prefetched but not started, and the task path of each running one."""

    running: list[str]
    unstarted: list[str]
    paths: dict[str, str]


def mark_lost(broker: RedisBroker, worker_ids: Sequence[str], note: str) -> Lost:
    """Before the jobs of lost workers are taken back (RedisBroker.reap): the jobs they had
    started get ``lost_reason`` = ``note`` and ``alone``, so that each is claimed alone
    (claim.lua) and run alone (the worker) next time, and only a job that takes its
    worker down again is charged again (not the ones that happened to run beside it or
    were claimed with it); the jobs they had claimed but not started (prefetched, or
    handed to them) are returned apart (pass them to ``reap(unstarted=...)``: requeued
    without a charge).

    A job had started when the worker recorded its start (``began`` = its attempt on the
    job's hash, written before the task runs: runtime.worker.starts), or, with no such
    record, when its last heartbeat listed it as running; not when a watchdog spared it
    (``began`` = ``spared``: runtime.watch).

    Returns the started ids, the unstarted ids, and the task path of each started one."""
    if not worker_ids:
        return Lost([], [], {})
    queues = broker.queue_names()
    pipe = broker.redis.pipeline(transaction=False)
    for w in worker_ids:
        pipe.hget(broker.keys.worker(w), "running")
        for q in queues:
            pipe.smembers(broker.keys.running(w, q))
    replies = pipe.execute()
    jobs: set[str] = set()
    beating: set[str] = set()
    for i in range(0, len(replies), 1 + len(queues)):
        jobs = jobs.union(*replies[i + 1:i + 1 + len(queues)])
        beating.update(r["id"] for r in listed(replies[i]) if r.get("run") is True)
    ids = sorted(jobs)
    for j in ids:
        pipe.hmget(broker.keys.job(j), "began", "attempt", "path")
    fields = dict(zip(ids, pipe.execute())) if ids else {}
    # its start record, or (that record lost) its last heartbeat; "spared": a watchdog
    # killed the worker for another job (runtime.watch)
    started = {j for j, (began, attempt, _) in fields.items()
               if began == attempt or (began is None and j in beating)}
    suspects = sorted(started & jobs)
    for j in suspects:  # began: known started from its heartbeat alone (reap.lua logs it started)
        pipe.hset(broker.keys.job(j), mapping={"lost_reason": note, "alone": "1", "began": fields[j][1] or ""})
    if suspects:
        pipe.execute()
    return Lost(suspects, sorted(jobs - started), {j: fields[j][2] or "?" for j in suspects})
