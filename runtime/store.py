"""The job store: where job documents are read and listed.

The contract (:class:`JobStore`) is narrow: get one or many documents, list ids by
status/queue/path newest first, count by status. :class:`RedisJobStore` keeps documents as
hashes next to the queues (the broker's Lua scripts write them in the same round trip as
each claim and completion); :class:`runtime.mongo_store.MongoJobStore` keeps a durable
copy in MongoDB and implements the same contract; the same contract tests
(tests/test_store_contract.py) run against both.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, Sequence

import redis

from .errors import JobNotFound
from .job import Job
from .keys import Keys
from .status import FINAL, Status


class JobStore(Protocol):
    def get(self, job_id: str) -> Job:
        """The document of ``job_id`` with its history. Raises JobNotFound."""

    def get_many(self, ids: Sequence[str]) -> list[Job | None]:
        """Documents of ``ids`` in order; None for a missing one."""

    def list_jobs(self, status: str | None = None, queue: str | None = None,
                  path: str | None = None, limit: int = 50) -> list[Job]:
        """Up to ``limit`` jobs matching every given filter, newest change first."""

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""


class RedisJobStore:
    """Job documents in Redis hashes (``{p}:j:{id}``) with status indexes (``{p}:st:*``)."""

    def __init__(self, client: redis.Redis, key_prefix: str = "rt") -> None:
        self.client = client
        self.keys = Keys(key_prefix)

    def get(self, job_id: str) -> Job:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        pipe.lrange(self.keys.history(job_id), 0, -1)
        data, history = pipe.execute()
        if not data:
            raise JobNotFound(f"no job {job_id!r} (never queued, or its document expired)")
        return Job.from_hash(data, history)

    def get_many(self, ids: Sequence[str], history: bool = True) -> list[Job | None]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
            if history:
                pipe.lrange(self.keys.history(job_id), 0, -1)
        replies = pipe.execute()
        step = 2 if history else 1
        out: list[Job | None] = []
        for i in range(0, len(replies), step):
            data = replies[i]
            out.append(Job.from_hash(data, replies[i + 1] if history else None) if data else None)
        return out

    def _ids_newest_first(self, statuses: Iterable[str], batch: int) -> Iterator[str]:
        """Ids from the given status indexes merged newest first (by time of last change),
        ties by id, highest first (as MongoJobStore sorts: the same order in both stores)."""
        pipe = self.client.pipeline(transaction=False)
        statuses = list(statuses)
        offset = 0
        while True:
            for s in statuses:
                pipe.zrevrange(self.keys.status(s), offset, offset + batch - 1, withscores=True)
            chunks = pipe.execute()
            merged = sorted((item for chunk in chunks for item in chunk), key=lambda x: (x[1], x[0]), reverse=True)
            if not merged:
                return
            for job_id, _ in merged:
                yield job_id
            if all(len(c) < batch for c in chunks):
                return
            offset += batch

    def list_jobs(self, status: str | None = None, queue: str | None = None,
                  path: str | None = None, limit: int = 50, history: bool = False) -> list[Job]:
        statuses = [Status(status).value] if status else [s.value for s in Status]
        out: list[Job] = []
        pending: list[str] = []

        def flush() -> None:
            for job in self.get_many(pending, history=history):
                if job is None:
                    continue  # expired document; its index entry is trimmed by the reaper
                if status and job.status != status:
                    continue  # changed status between the index read and now
                if (queue and job.queue != queue) or (path and job.path != path):
                    continue
                if len(out) < limit:
                    out.append(job)
            pending.clear()

        for job_id in self._ids_newest_first(statuses, batch=max(limit, 200)):
            pending.append(job_id)
            if len(pending) >= 200:
                flush()
                if len(out) >= limit:
                    break
        flush()
        return out

    def counts(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for s in Status:
            pipe.zcard(self.keys.status(s.value))
        return {s.value: int(n) for s, n in zip(Status, pipe.execute())}

    def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Per queue (``queues``, or every queue ever used): ready (due now), delayed
        (scheduled or retrying)."""
        names = list(queues) if queues is not None else sorted(self.client.smembers(self.keys.queues))
        pipe = self.client.pipeline(transaction=False)
        for q in names:
            pipe.zcard(self.keys.ready(q))
            pipe.zcard(self.keys.scheduled(q))
        replies = pipe.execute()
        return {q: {"ready": int(replies[2 * i]), "delayed": int(replies[2 * i + 1])}
                for i, q in enumerate(names)}

    def final_ids(self, status: str, queue: str | None = None, path: str | None = None) -> list[str]:
        """Every id with final ``status`` matching the filters (for bulk requeue)."""
        if Status(status) not in FINAL and Status(status) != Status.INTERRUPT:
            raise ValueError(f"{status} is not a final status")
        return [j.id for j in self.list_jobs(status=status, queue=queue, path=path, limit=10**9)]
