"""Claims a live worker holds in Redis but does not know of: a claim or hand-off whose
reply was lost with a connection, or whose outcome went to a master that a failover
demoted. The worker finds them once Redis answers again (or the master moved) and lets
the next reaper pass requeue them, uncharged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from ..messages import Claimed
from .broker import RedisBroker
from .connection import REDIS_ERRORS
from .replies import claimed_from

log = logging.getLogger("runtime.broker")


def release_unknown(broker: RedisBroker, worker_id: str, claimed: Sequence[Claimed], held: Iterable[str]) -> bool:
    """After Redis was lost: the claims of ``worker_id`` on its queues (the broker's
    settings) that it does not
    know of (a claim or hand-off whose reply was lost with a connection; ``claimed`` and
    ``held`` are what it knows) get a deadline that has passed, so that the next reaper
    pass requeues them without a charge (reap.lua: an expired claim of a live worker)
    rather than after ``visibility_timeout_s``. Jobs waiting on its hand-off lists are
    known. Returns False (logged) when Redis could not be asked."""
    known = {c.id for c in claimed} | set(held)
    try:
        for queue in broker.settings.queues:
            pipe = broker.redis.pipeline(transaction=True)  # one queue's keys: one hash slot
            pipe.smembers(broker.keys.running(worker_id, queue))
            pipe.lrange(broker.keys.handoff(worker_id, queue), 0, -1)
            running, handed = pipe.execute()
            unknown = sorted(set(running) - known - {claimed_from(json.loads(h)).id for h in handed})
            if unknown:
                log.warning("claims of %s whose reply was lost with the connection, requeued: %s",
                            worker_id, ", ".join(unknown))
                pipe = broker.redis.pipeline(transaction=False)
                pipe.zadd(broker.keys.inflight(queue), dict.fromkeys(unknown, 0), xx=True)
                for job_id in unknown:  # its start record no longer says it is held (runtime.watch)
                    pipe.hset(broker.keys.job(job_id), "began", "released")
                pipe.execute()
    except REDIS_ERRORS as exc:
        log.warning("could not look for claims whose reply was lost (%s); they come back after "
                    "visibility_timeout_s", exc)
        return False
    return True
