"""Jobs whose copy to MongoDB is pending: reads take them from Redis until the copy lands.

A producer's copy (``queue_job(s)``, ``cancel``, ``abort``, ``requeue``) waits at most
``mongodb_producer_timeout_s``; what it could not write by then (a slow or unreachable
MongoDB, the circuit breaker open) it hands over explicitly: the ids go to the Redis set
``{p}:mongo:pending``, which the workers' copier drains at every reap (about every
``reap_interval_s``; :meth:`runtime.store.mongo.sync.MongoSync.copy_pending`), as does
``runtime mongo reconcile``. Until then MongoDB lacks those documents or holds an older
version, and the reads of the MongoDB store (``get``, ``get_many``, ``list_jobs``,
``counts``) take them from Redis, the authority: a job Redis has is never missing from
``runtime jobs``, ``job`` or ``queues``. The set is empty in normal operation, and
asking costs one Redis command per read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from ...broker.connection import texts
from ...job import Job
from ..redis_store import RedisJobStore

#: Ids added to the pending set per command.
ADD_BATCH = 10_000


def pending_key(live: RedisJobStore) -> str:
    """The Redis set of the ids whose copy is pending."""
    return live.keys.mongo("pending")


def hand_over(live: RedisJobStore, ids: Sequence[str]) -> None:
    """Record ``ids`` as pending (raises redis's errors)."""
    for i in range(0, len(ids), ADD_BATCH):
        live.client.sadd(pending_key(live), *ids[i:i + ADD_BATCH])


def pending_ids(live: RedisJobStore) -> list[str]:
    """Every pending id (normally none)."""
    return sorted(texts(cast("set[str]", live.client.smembers(pending_key(live)))))


def changed_at(job: Job) -> float:
    """Time of the job's last status change (UNIX seconds), its sort key in lists."""
    if job.history and job.history[-1].get("at") is not None:
        return float(job.history[-1]["at"])
    return float(job.ended_at or job.started_at or job.queued_at or 0.0)


def matches(job: Job, status: str | None, queue: str | None, path: str | None,
            before: tuple[float, str] | None) -> bool:
    """Does ``job`` pass the filters of a list query (and come after the cursor)?"""
    if (status and job.status.value != status) or (queue and job.queue != queue) or (path and job.path != path):
        return False
    return before is None or (round(changed_at(job), 3), job.id) < (round(before[0], 3), before[1])


def merge_page(stored: list[tuple[float, Job]], live: list[Job | None], pending: set[str],
               filters: dict[str, Any], limit: int, history: bool) -> list[Job]:
    """One page of a list query: the stored jobs ((change time, job), newest first) but
    the pending ones, and the pending ones as Redis has them, newest first, ties by id."""
    rows = [(when, job) for when, job in stored if job.id not in pending]
    for job in live:
        if job is not None and matches(job, **filters):
            if not history:
                job.artifacts = {}
            rows.append((round(changed_at(job), 3), job))
            if not history:
                job.history = []
    rows.sort(key=lambda r: (r[0], r[1].id), reverse=True)
    return [job for _, job in rows[:limit]]


def adjust_counts(counts: dict[str, int], stored: dict[str, str], live: Sequence[Job | None]) -> None:
    """Correct ``counts`` (per status, from MongoDB) in place for the pending jobs: each
    counted under its Redis status, not under the status MongoDB has (``stored``: id ->
    status of those it has)."""
    for job in live:
        if job is None:
            continue
        if job.id in stored and stored[job.id] in counts:
            counts[stored[job.id]] -= 1
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
