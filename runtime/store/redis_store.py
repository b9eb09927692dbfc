"""Job documents in Redis, next to the queues: the broker's Lua scripts write them in the
same round trip as each claim and completion; this store reads them (and writes a
running job's progress)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import redis

from ..broker.keys import Keys
from ..broker.registry import queue_names
from ..errors import JobNotFound
from ..job import Job
from ..status import FINAL, REQUEUABLE, Status

#: The status whose index orders its jobs by a sort other than the last change: its score
#: is the time the job entered it (queued: when it was queued; started: when claimed).
_OWN_INDEX = {"queued": "queued", "started": "started"}


class RedisJobStore:
    """Job documents in Redis hashes (``{p}:j:{id}``) with status indexes per queue
    (``{p}:st:{queue}:{status}``)."""

    #: the list_jobs filters answered from an index (queue and path are checked per document)
    indexed: frozenset[str] = frozenset({"status"})

    def __init__(self, client: redis.Redis, key_prefix: str = "rt") -> None:
        self.client = client
        self.keys = Keys(key_prefix)

    @property
    def live(self) -> RedisJobStore:
        """The store of the live documents: this one."""
        return self

    def set_fields(self, job_id: str, fields: dict[str, str], client: redis.Redis | None = None) -> None:
        """Write ``fields`` (strings) of a running job (progress, the watchdog's overrun);
        on ``client`` when given (the heartbeat's own connection)."""
        (client or self.client).hset(self.keys.job(job_id), mapping=cast("dict[Any, Any]", fields))

    def get(self, job_id: str) -> Job:
        [job] = self.get_many([job_id])
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (never queued, or its document expired)")
        return job

    def get_many(self, ids: Sequence[str], history: bool = True) -> list[Job | None]:
        """The jobs ``ids`` (None where missing), without their history unless ``history``.
        A document whose key holds another Redis type (corrupt data) is read as a job
        whose fields say so (``Job.unreadable``), never raised."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        out: list[Job | None] = []
        for job_id, data in zip(ids, pipe.execute(raise_on_error=False)):
            if isinstance(data, redis.ResponseError):  # not a hash
                data = {"id": job_id, "status": f"({data})"}
            out.append(Job.from_hash(data, history=history, job_id=job_id) if data else None)
        return out

    def queue_names(self) -> list[str]:
        """Every queue ever used ({p}:queues), sorted."""
        return queue_names(self.client, self.keys)

    def _index_newest_first(self, key: str, batch: int,
                            before: tuple[float, str] | None) -> Iterator[tuple[float, str]]:
        """(change time, id) of one status index, newest first (ties: highest id first),
        only those before the cursor ``before``; ``batch`` per round trip."""
        top: float | str = "+inf" if before is None else before[0]
        offset = 0
        while True:
            chunk: list[tuple[str, float]] = self.client.zrevrangebyscore(
                key, top, "-inf", start=offset, num=batch, withscores=True)  # type: ignore[assignment]
            for job_id, score in chunk:  # ties of a score come highest id first
                item = (round(score, 6), job_id)
                if before is None or item < (round(before[0], 6), before[1]):
                    yield item
            if len(chunk) < batch:
                return
            offset += batch

    def _ids_newest_first(self, statuses: Iterable[str], batch: int, before: tuple[float, str] | None = None,
                          queue: str | None = None) -> Iterator[tuple[float, str]]:
        """Ids from the given status indexes of ``queue`` (None: of every queue) merged newest
        first (by time of last change), ties by id, highest first (as MongoJobStore sorts:
        the same order in both stores)."""
        queues = [queue] if queue else self.queue_names()
        streams = [self._index_newest_first(self.keys.status(q, s), batch, before) for q in queues for s in statuses]
        yield from heapq.merge(*streams, reverse=True)

    def sortable(self, sort: str, status: str | None) -> bool:
        """Does an index answer :meth:`list_sorted` of ``sort`` with ``status``? Last
        change: always; end: the final statuses' indexes (their score is when the job
        ended); queue time and start: the queued and started indexes (their score is when
        the job was queued, claimed). Duration has no index in Redis."""
        if sort == "changed":
            return True
        if sort == "ended":
            return status is None or Status(status) in FINAL
        return status is not None and _OWN_INDEX.get(sort) == status

    def list_sorted(self, sort: str, status: str | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None) -> list[tuple[float, Job]]:
        """Up to ``limit`` (sort value, job) of ``status`` (None: any), largest value first,
        ties highest id first, those before the cursor ``before`` (value, id) only: the
        value is the index's score (UNIX s). Raises ValueError when :meth:`sortable` is
        False."""
        if not self.sortable(sort, status):
            raise ValueError(f"the Redis job store has no index of jobs by {sort} for status {status or 'any'}")
        statuses = [status] if status else sorted(s.value for s in FINAL) if sort == "ended" else None
        return [(j.changed_at or 0.0, j) for j in self.list_jobs(limit=limit, before=before, statuses=statuses)]

    def list_jobs(self, status: str | None = None, queue: str | None = None, path: str | None = None,
                  limit: int = 50, history: bool = False, before: tuple[float, str] | None = None,
                  statuses: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs matching every given filter, newest change first, those
        changed before the cursor ``before`` (change time, id) only; ``statuses``: of
        any of those (instead of ``status``)."""
        wanted = set(statuses) if statuses is not None else {Status(status).value} if status else None
        if statuses is None:
            statuses = [Status(status).value] if status else [s.value for s in Status]
        out: list[Job] = []
        pending: list[tuple[float, str]] = []  # (change time: the index's score, id)

        def flush() -> None:
            for (changed, _), job in zip(pending, self.get_many([i for _, i in pending], history=history)):
                if job is None:
                    continue  # expired document; its index entry is trimmed by the reaper
                if wanted is not None and job.status.value not in wanted:
                    continue  # changed status between the index read and now
                if (queue and job.queue != queue) or (path and job.path != path):
                    continue
                if len(out) < limit:
                    job.changed_at = changed  # where the listing found it: its cursor
                    out.append(job)
            pending.clear()

        for item in self._ids_newest_first(statuses, max(limit, 200), before, queue):
            pending.append(item)
            if len(pending) >= 200:
                flush()
                if len(out) >= limit:
                    break
        flush()
        return out

    def counts(self) -> dict[str, int]:
        """Jobs per status, summed over the status indexes of every queue."""
        pipe = self.client.pipeline(transaction=False)
        queues = self.queue_names()
        for q in queues:
            for s in Status:
                pipe.zcard(self.keys.status(q, s.value))
        replies = pipe.execute() if queues else []
        n = len(Status)
        return {s.value: sum(int(c) for c in replies[i::n]) for i, s in enumerate(Status)}

    def final_ids(self, status: str, queue: str | None = None, path: str | None = None) -> list[str]:
        """Every id with final ``status`` matching the filters (for bulk requeue)."""
        if Status(status) not in REQUEUABLE:
            raise ValueError(f"jobs of status {status} cannot be requeued")
        return [j.id for j in self.list_jobs(status=status, queue=queue, path=path, limit=10**9)]
