"""The producer side: queue jobs, wait for them, cancel, abort, requeue; and the reads.

:class:`Client` holds its parts (runtime.client.parts: one connection, the broker, the
job store, the middleware chain) and the settings; the module-level functions in
``runtime`` (``queue_job``, ``get_job``, ``wait``...) use a default client
(runtime.client.defaults). What the CLI shows is read through
:attr:`Client.reader` (runtime.client.reader).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, overload

import redis

from ..broker.connection import ANY_REDIS_ERROR, REDIS_ERRORS, runtime_error
from ..broker.moves import move as move_jobs
from ..errors import ConfigError, InvalidParams, InvalidTransition, JobNotFound
from ..job import Job, encode_params, new_job_id
from ..messages import NewJob
from ..settings import Settings, load_settings
from ..tasks import TaskSpec
from ..unique import batch_ids, check_unique, scoped_id
from .check import EnqueueCheck
from .limits import check_ids, check_priority, check_queue, delay_s
from .parts import Parts, build
from .reader import Reader
from .waiting import iter_done, iter_pairs

log = logging.getLogger("runtime.client")

P = ParamSpec("P")
T = TypeVar("T")


class Client:
    """Queue and inspect jobs on the Redis given by ``settings`` (``client``: a Redis client
    to use; ``parts``: all of them, as a worker hands its own to its tasks' client).
    Jobs are checked at enqueue when their task can be imported (runtime.client.check;
    ``import_tasks=False``: only tasks already imported, as in a worker).

    Raises BrokerUnavailable (at construction) when Redis cannot be reached.
    """

    def __init__(self, settings: Settings | None = None, client: redis.Redis | None = None,
                 parts: Parts | None = None, middleware: bool = True, import_tasks: bool = True) -> None:
        self.parts = parts or build(settings or load_settings(), client, middleware)
        self.settings = self.parts.settings
        self.redis = self.parts.redis
        self.broker = self.parts.broker
        #: answers reads: the live Redis documents, or MongoDB's copy
        self.store = self.parts.store
        self.live = self.store.live
        self.middleware = self.parts.middleware
        self.mongo: Any = None  # runtime.store.mongo.sync.MongoSync with a MongoDB URL
        if self.store is not self.live:
            from ..store.mongo.sync import MongoSync
            self.mongo = MongoSync(self.broker, self.store)  # type: ignore[arg-type]
        self._mongo_skip_until = 0.0  # producer copies skip MongoDB until then (circuit breaker)
        self.reader = Reader(self)
        self.checker = EnqueueCheck(self.settings.task_modules, import_tasks)

    def _spec(self, path: str, check: bool) -> TaskSpec | None:
        """The task to check the jobs of ``path`` against (runtime.client.check), or None."""
        if not check or not isinstance(path, str) or not path.strip():
            return None
        return self.checker.spec(path)

    def _new(self, path: str, params: Mapping[str, Any] | None, queue: str, priority: int,
             delay: float | None, eta: datetime | float | None, spec: TaskSpec | None = None,
             job_id: str | None = None, unique: tuple[str, float] = ("", 0.0), own_id: bool = False) -> NewJob:
        """A checked job to queue (``own_id``: ``job_id`` is runtime's own, of a form refused to
        callers: runtime.unique.check_id). Raises as :meth:`queue_job`."""
        if not isinstance(path, str) or not path.strip():
            raise InvalidParams(f"task path must be a non-empty dotted string, got {path!r}")
        check_queue(queue)
        check_priority(priority)
        job = NewJob(new_job_id(queue) if job_id is None else scoped_id(queue, job_id, own_id), path,
                     encode_params(params, self.settings.max_job_bytes), queue, priority, delay_s(delay, eta),
                     unique_key=unique[0], unique_for_s=unique[1])
        if spec is not None:
            self.checker.params(spec, params or {})
        if self.middleware.enqueue_hooks:
            self.middleware.before_enqueue(job)
        return job

    def queue_job(self, path: str, params: Mapping[str, Any] | None = None, *, queue: str = "default",
                  priority: int = 0, delay: float | None = None, eta: datetime | float | None = None,
                  check: bool = True, job_id: str | None = None, unique_key: str | None = None,
                  unique_for: float | None = None) -> str:
        """Queue one job; returns its id.

        ``job_id``: the job's id, chosen by the caller (runtime.unique: letters, digits and
        ``_.:@/+=-``, at most 200): while a job with that id exists, queuing it again
        queues nothing and returns the id. ``unique_key`` with ``unique_for`` (seconds):
        for that long after a job was queued with the key, and while that job exists, a
        job with the same key is not queued and the id of the first is returned (atomic
        in Redis: concurrent producers queue one job).

        ``priority``: int in [-100, 100], higher runs first within a queue. ``delay``
        (seconds) or ``eta`` (aware datetime or UNIX seconds): the job never starts before.
        ``check``: check the path and params when the task can be imported here
        (runtime.client.check). Raises InvalidParams (naming the offending key or param),
        JobTooLarge, TaskNotFound, TaskNotAllowed; BrokerUnavailable.
        """
        return self.queue_once(path, params, queue=queue, priority=priority, delay=delay, eta=eta, check=check,
                               job_id=job_id, unique_key=unique_key, unique_for=unique_for)[0]

    def queue_once(self, path: str, params: Mapping[str, Any] | None = None, *, queue: str = "default",
                   priority: int = 0, delay: float | None = None, eta: datetime | float | None = None,
                   check: bool = True, job_id: str | None = None, unique_key: str | None = None,
                   unique_for: float | None = None) -> tuple[str, bool]:
        """:meth:`queue_job`, returning (id, queued): ``queued`` is False when nothing was
        queued because a job with ``job_id``, or holding ``unique_key``, exists (the id
        is then that job's: Reader.holder says its status and when it frees the key)."""
        job = self._new(path, params, queue, priority, delay, eta, self._spec(path, check), job_id,
                        check_unique(unique_key, unique_for))
        held = self._enqueue([job])
        # a generated id found existing is this call's own job, sent again after a lost reply
        return held.get(job.id, job.id), job.id not in held or (job_id is None and held[job.id] == job.id)

    def queue_jobs(self, path: str, params_list: Iterable[Mapping[str, Any] | None], *, queue: str = "default",
                   priority: int = 0, delay: float | None = None, batch_size: int = 1000,
                   check: bool = True, job_ids: Sequence[str | None] | None = None,
                   unique_keys: Sequence[str | None] | None = None, unique_for: float | None = None) -> list[str]:
        """Queue one job per params dict, ``batch_size`` per round trip; returns the ids,
        one per params dict in order: as :meth:`queue_job` returns them.

        ``job_ids`` and ``unique_keys``: one per params dict (None for a job without), as
        ``job_id`` and ``unique_key`` of :meth:`queue_job`, with one ``unique_for`` for all;
        a key held, or twice in the batch, queues only the first job and returns its id.
        Every params dict, id and key is checked before anything is queued, so a bad one
        queues none (``check`` as in :meth:`queue_job`: the task is resolved once for all).
        Raises as :meth:`queue_job`.
        """
        params = list(params_list)
        chosen = batch_ids(len(params), job_ids, unique_keys, unique_for)
        spec = self._spec(path, check)
        jobs: list[NewJob] = []
        try:
            jobs.extend(self._new(path, p, queue, priority, delay, None, spec, job_id, unique)
                        for p, (job_id, unique) in zip(params, chosen))
        except BaseException as exc:
            if jobs and self.middleware.enqueued_hooks:  # none of them is queued
                self.middleware.after_enqueue(jobs, exc)
            raise
        held: dict[str, str] = {}
        for i in range(0, len(jobs), batch_size):
            try:
                held.update(self._enqueue(jobs[i:i + batch_size]))
            except BaseException as exc:
                rest = jobs[i + batch_size:]  # never sent
                if rest and self.middleware.enqueued_hooks:
                    self.middleware.after_enqueue(rest, exc)
                raise
        return [held.get(j.id, j.id) for j in jobs]

    def _enqueue(self, jobs: Sequence[NewJob]) -> dict[str, str]:
        """Queue in Redis, then (with MongoDB) write the documents; a MongoDB that cannot
        take them is logged, not raised: the jobs are queued and the sweep copies them.
        Returns {id not queued: id of the job holding its unique key, or itself for an id
        that exists}."""
        error: BaseException | None = None
        try:
            self._check_store()
            now, held = self.call(self.broker.enqueue, jobs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self.middleware.enqueued_hooks:
                self.middleware.after_enqueue(jobs, error)
        if self.mongo is not None:  # an existing id (held by itself) copied as before: MongoDB refuses a duplicate
            queued = [j for j in jobs if held.get(j.id, j.id) == j.id]
            self._copy([j.id for j in queued], self.mongo.enqueued, queued, now)
        return held

    def _check_store(self) -> None:
        """With MongoDB, before this client's first change: raise ConfigError for refused
        credentials or a collection of another deployment (nothing is queued then); an
        unreachable MongoDB is only logged (producers queue through an outage)."""
        if self.mongo is not None and not self.mongo.store.owner_checked:
            error = self._mongo_quietly(self.mongo.store.check_owner, strict=True)
            if error:
                self._warn(error)

    def _copy(self, ids: Sequence[str], fn: Any, *args: Any) -> None:
        """A producer's copy of ``ids`` to MongoDB (``fn(*args, copied)``, best effort:
        :meth:`_mongo_quietly`). The ids it did not copy are handed over to the workers'
        copier, and reads take them from Redis meanwhile (runtime.store.mongo.pending)."""
        copied: list[str] = []
        error = self._mongo_quietly(fn, *args, copied)
        if len(copied) == len(ids):
            return
        done = set(copied)
        try:
            self.mongo.hand_over([i for i in ids if i not in done])
        except REDIS_ERRORS as exc:  # the sweep still finds them (their status changed)
            error = f"{error or 'MongoDB skipped'}; not handed over either ({exc})"
        if error:
            self._warn(error, len(ids) - len(done), len(ids))

    def _mongo_quietly(self, fn: Any, *args: Any, strict: bool = False) -> str | None:
        """``fn(*args)``, a producer's call to MongoDB: best effort, fast. Redis already holds
        the change and the copy can be left to the workers, so it waits at most
        ``mongodb_producer_timeout_s``, and after a failure the calls skip MongoDB for
        ``mongodb_breaker_s`` (a circuit breaker). Returns why it failed (one line), None
        when it succeeded or was skipped. ``strict``: a configuration error (refused
        credentials, another deployment's collection) is raised as ConfigError."""
        if time.monotonic() < self._mongo_skip_until:
            return None
        import pymongo
        import pymongo.errors

        from ..store.mongo.connection import short_error, translate
        try:
            with pymongo.timeout(self.settings.mongodb_producer_timeout_s):
                fn(*args)
            return None
        except ConfigError as exc:
            if strict:
                raise
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - Redis has it; the workers' copier or the sweep copies it
            mapped = translate(exc)
            if strict and isinstance(mapped, ConfigError):
                raise mapped from None
            reason = f"{type(exc).__name__}: {short_error(exc)}"
            if isinstance(exc, pymongo.errors.PyMongoError):
                self._mongo_skip_until = time.monotonic() + self.settings.mongodb_breaker_s
                reason += f"; MongoDB skipped for {self.settings.mongodb_breaker_s:g} s"
            return reason

    def _warn(self, reason: str, left: int = 0, total: int = 0) -> None:
        what = f"{left} of {total} job documents" if total else "job documents"
        log.warning("%s not copied to MongoDB (%s): the reconcile sweep will copy them (handed over to the "
                    "workers' copier; reads take them from Redis meanwhile)", what, reason)

    def get_job(self, job_id: str) -> Job:
        """The job's document with its history (from MongoDB when configured). Raises
        JobNotFound; BrokerUnavailable or StoreUnavailable."""
        return self.call(self.store.get, job_id)

    def live_or_stored(self, ids: Sequence[str]) -> list[Job | None]:
        """Documents of ``ids`` from Redis (live), else from MongoDB (history)."""
        jobs = self.call(self.live.get_many, ids)
        missing = [i for i, j in zip(ids, jobs) if j is None]
        if missing and self.mongo is not None:
            found = dict(zip(missing, self.call(self.store.get_many, missing)))
            jobs = [j if j is not None else found[i] for i, j in zip(ids, jobs)]
        return list(jobs)

    @overload
    def wait(self, ids: str, timeout_s: float | None = None) -> Job: ...  # type: ignore[overload-overlap]

    @overload
    def wait(self, ids: Sequence[str], timeout_s: float | None = None) -> list[Job]: ...

    def wait(self, ids: str | Sequence[str], timeout_s: float | None = None) -> Job | list[Job]:
        """Block until the jobs are final; returns their Jobs (one Job for one id). A job
        moved to another queue is followed there: its Job is the one of its new id.

        Raises WaitTimeout (with ``.pending``) after ``timeout_s`` seconds, JobNotFound for an
        id that does not exist. Costs one round trip when the jobs are already final (two
        past 20 of them, or for documents over 16 KiB: those are read after).
        """
        wanted = [ids] if isinstance(ids, str) else list(ids)
        done = dict(iter_pairs(self, wanted, timeout_s))
        return done[wanted[0]] if isinstance(ids, str) else [done[i] for i in wanted]

    def iter_done(self, ids: Sequence[str], timeout_s: float | None = None) -> Iterator[Job]:
        """Yield each job of ``ids`` as it becomes final (those already final first); see
        runtime.client.waiting.iter_done."""
        return iter_done(self, ids, timeout_s)

    def control_many(self, action: str, ids: Sequence[str], by: str = "") -> list[str]:
        """cancel / abort / requeue ``ids`` as far as each job's status allows, without
        raising for the others (bulk actions); one reply per id: 'ok', 'missing' or the
        status that refused it. ``by``: who asked and from where, kept in each touched
        job's history entry. Raises InvalidParams for ids that are not strings."""
        ids = check_ids(ids)
        self._check_store()
        replies = self.call(self.broker.control, action, ids, by)
        return self._copy_done(action, ids, replies)

    def move_many(self, ids: Sequence[str], queue: str | None = None, priority: int | None = None,
                  by: str = "") -> list[str]:
        """:meth:`moves`' replies alone (bulk actions)."""
        return [reply for reply, _ in self.moves(ids, queue, priority, by)]

    def moves(self, ids: Sequence[str], queue: str | None = None, priority: int | None = None,
              by: str = "", strict: bool = False) -> list[tuple[str, str]]:
        """Move waiting ``ids`` to ``queue`` and/or ``priority`` (None: unchanged), keeping their due
        time, as far as each job's status allows (runtime.broker.moves). One (reply, id) per id:
        ('ok', its id now: in another queue a job gets a new id, its old one ends moved, naming
        it), ('already-moved', that new id), or ('missing' or the status refusing it, its id).
        Raises InvalidParams (``strict``: also JobNotFound, InvalidTransition)."""
        ids = check_ids(ids)
        check_queue(queue, none=True)
        check_priority(priority, none=True)
        self._check_store()
        out = self.call(move_jobs, self.broker, ids, queue, priority, by)
        if self.mongo is not None:  # "already-moved" too: the reply of the move that made it may have been lost
            done = [x for i, (r, new) in zip(ids, out) if r in ("ok", "already-moved") for x in dict.fromkeys((i, new))]
            if done:
                self._copy(done, self.mongo.sync, done)
        if strict:  # a job moved there before counts as moved
            self._raise_refused("move", ids, ["ok" if r == "already-moved" else r for r, _ in out],
                                "only waiting jobs can be moved")
        return out

    def move(self, *ids: str, queue: str | None = None, priority: int | None = None, by: str = "") -> list[str]:
        """Move waiting jobs to ``queue`` and/or ``priority``; returns their ids now, in order (a new
        one in another queue: :meth:`moves`). Raises InvalidTransition, JobNotFound, InvalidParams."""
        return [new for _, new in self.moves(ids, queue, priority, by, strict=True)]

    def _control(self, action: str, ids: Sequence[str], allowed: str, by: str) -> list[str]:
        return self._raise_refused(action, ids, self.control_many(action, ids, by), allowed)

    def _raise_refused(self, action: str, ids: Sequence[str], replies: Sequence[str], allowed: str) -> list[str]:
        """``ids`` when every reply is 'ok'; else JobNotFound or InvalidTransition for the
        first refused one (saying how many of the others were done)."""
        done = sum(r == "ok" for r in replies)
        also = f" (done for the other {done} of {len(ids)})" if done else ""
        for job_id, reply in zip(ids, replies):
            if reply == "missing":
                raise JobNotFound(f"no job {job_id!r}{also}")
            if reply != "ok":
                raise InvalidTransition(f"cannot {action} job {job_id}: its status is {reply} ({allowed}){also}")
        return list(ids)

    def cancel(self, *ids: str, by: str = "") -> list[str]:
        """Cancel waiting jobs (queued, delayed, retry, interrupt): status cancel (``by``:
        who asked, kept in the history). Raises InvalidTransition for a job that is
        running or final, JobNotFound; InvalidParams for ids that are not strings."""
        return self._control("cancel", ids, "only waiting jobs can be cancelled; abort a running one", by)

    def abort(self, *ids: str, by: str = "") -> list[str]:
        """Ask the workers running these jobs to kill them (status abort, within one
        heartbeat, about 1 s). Raises InvalidTransition for a job that is not running,
        JobNotFound; InvalidParams for ids that are not strings (a list: abort(*ids))."""
        return self._control("abort", ids, "only running jobs can be aborted; cancel a waiting one", by)

    def requeue(self, *ids: str, by: str = "") -> list[str]:
        """Queue final or interrupted jobs again, with a fresh retry budget; history kept
        (``by``: who asked, kept in it). A job parked by a cap goes back to its queue at
        its old place (runtime.caps.unpark). Raises as :meth:`cancel`."""
        from ..caps import unpark_jobs
        ids = tuple(check_ids(ids))
        unparked = set(self.call(unpark_jobs, self.redis, self.broker.keys, ids))
        rest = [i for i in ids if i not in unparked]
        done = self._control("requeue", rest, "only final jobs can be requeued", by) if rest else []
        return [i for i in ids if i in unparked or i in done]

    def requeue_where(self, status: str = "failed", queue: str | None = None, path: str | None = None) -> list[str]:
        """Requeue every job with final ``status`` of ``queue`` and/or ``path``; returns ids.
        Raises InvalidParams for a bad queue name."""
        check_queue(queue, none=True)
        ids = self.call(self.store.final_ids, status, queue=queue, path=path)
        replies = self.control_many("requeue", ids)
        return [i for i, r in zip(ids, replies) if r == "ok"]

    def _copy_done(self, action: str, ids: Sequence[str], replies: Sequence[str]) -> list[str]:
        """With MongoDB: copy the jobs a control action changed (Redis first, then MongoDB),
        and requeue from MongoDB those only it still has; returns the replies updated."""
        replies = list(replies)
        if self.mongo is None:
            return replies
        done = [i for i, r in zip(ids, replies) if r == "ok"]
        if done:
            self._copy(done, self.mongo.sync, done)
        missing = [i for i, r in zip(ids, replies) if r == "missing"]
        if action == "requeue" and missing:
            restored = set(self.call(self.mongo.requeue_from_history, missing))
            replies = ["ok" if i in restored else r for i, r in zip(ids, replies)]
        return replies

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` with Redis and MongoDB errors as runtime's: unreachable
        (or refusing writes for now) -> BrokerUnavailable / StoreUnavailable; a Redis
        Cluster node behind a plain URL, refused MongoDB credentials -> ConfigError
        (runtime.broker.connection.runtime_error)."""
        try:
            return fn(*args, **kwargs)
        except ANY_REDIS_ERROR as exc:
            error = runtime_error(exc, self.redis)
            if error is not None:
                raise error from None
            raise
        except Exception as exc:
            if self.mongo is not None:
                from ..store.mongo.connection import translate
                mapped = translate(exc, self.settings.mongodb_url)
                if mapped is not None:
                    raise mapped from None
            raise
