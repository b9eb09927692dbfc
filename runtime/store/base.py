"""The job-store contract: where job documents are read and listed.

The contract is narrow: get one or many documents, list them by status/queue/path newest
first, count them by status, and the ids a bulk requeue takes. Two stores implement it:
:class:`runtime.store.redis_store.RedisJobStore` (the live documents, next to the queues)
and :class:`runtime.store.mongo.store.MongoJobStore` (a durable copy); one contract test
suite (tests/store/test_store_contract.py) runs against both. Each store's ``live`` is the
Redis store of the same deployment (the Redis store itself, or the one MongoDB copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..job import Job

if TYPE_CHECKING:
    from .redis_store import RedisJobStore


class JobStore(Protocol):
    #: the filters of list_jobs answered from an index ("status", "queue", "path"; and
    #: "worker" where list_jobs takes one); the others are checked on each document read
    indexed: frozenset[str]

    @property
    def live(self) -> RedisJobStore:
        """The Redis store of the live documents of this deployment."""

    def get(self, job_id: str) -> Job:
        """The document of ``job_id`` with its history. Raises JobNotFound."""

    def get_many(self, ids: Sequence[str], history: bool = True) -> list[Job | None]:
        """Documents of ``ids`` in order; None for a missing one."""

    def list_jobs(self, status: str | None = None, queue: str | None = None, path: str | None = None,
                  limit: int = 50, history: bool = False, before: tuple[float, str] | None = None,
                  statuses: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs matching every given filter, newest change first (ties: the
        highest id first), those changed before the cursor ``before`` (change time, id);
        ``statuses``: of any of those (instead of ``status``)."""

    def sortable(self, sort: str, status: str | None) -> bool:
        """Does an index answer :meth:`list_sorted` of ``sort`` (changed, queued, started,
        ended, run) for jobs of ``status`` (None: any)?"""

    def list_sorted(self, sort: str, status: str | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None) -> list[tuple[float, Job]]:
        """Up to ``limit`` (sort value, job) of ``status``, largest value first (ties: the
        highest id first), those before the cursor ``before`` (value, id), from an index.
        Raises ValueError when :meth:`sortable` is False."""

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""

    def final_ids(self, status: str, queue: str | None = None, path: str | None = None) -> list[str]:
        """Every id with requeuable ``status`` matching the filters. Raises ValueError for a
        status that cannot be requeued."""
