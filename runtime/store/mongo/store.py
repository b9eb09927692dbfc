"""The MongoDB job store: job documents, reports included, kept and queried in MongoDB.

Redis stays the authority of live state (queues, claims, wake-ups, and every status
change, made atomically and fenced by the Lua scripts); MongoDB holds the durable,
queryable copy of each job document (its shape: runtime.store.mongo.documents), and
every read of a client with a MongoDB URL (``get``, ``get_many``, ``list_jobs``,
``counts``, so ``runtime jobs``, ``job``, ``requeue``, ``queues``...) is answered here.
How the copies are kept in step, and why a crash between the two writes never loses a
job nor overwrites a final status, is in runtime.store.mongo.sync; this module is the
collection itself.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...errors import ConfigError, JobNotFound
from ...job import Job
from ...job import exc_name as name_of
from ...settings import Settings
from ...status import REQUEUABLE, Status
from ..redis_store import RedisJobStore
from .connection import mongo_client, short_error, translate, unreachable_errors
from .deployment import ALIVE_SWEEPS, check_owner, touch
from .documents import (
    DUPLICATE_KEY,
    INDEXES,
    LEGACY_INDEXES,
    SORT_FIELDS,
    job_from_document,
    to_date,
    to_seconds,
)
from .pending import adjust_counts, merge_page, pending_ids

log = logging.getLogger("runtime.mongo")

F = TypeVar("F", bound=Callable[..., Any])


def _read(fn: F) -> F:
    """A read of the store: after the ownership check (once per store), MongoDB unreachable
    raises StoreUnavailable (CLI exit code 4), refused credentials ConfigError
    (:func:`translate`)."""
    @functools.wraps(fn)
    def wrapper(self: MongoJobStore, *args: Any, **kwargs: Any) -> Any:
        try:
            self.check_owner()
            return fn(self, *args, **kwargs)
        except Exception as exc:
            mapped = translate(exc, self.settings.mongodb_url)
            if mapped is None:
                raise
            raise mapped from None
    return wrapper  # type: ignore[return-value]



#: Longest MongoDB database name, characters (MongoDB's limit: under 64 bytes).
MAX_DATABASE_NAME = 63


def _url_database(url: str | None) -> str:
    """The database part of a mongodb:// URL's path, as written (pymongo reads "a.b" as
    database "a" and collection "b")."""
    from urllib.parse import unquote, urlsplit
    return unquote(urlsplit(url or "").path.lstrip("/"))


def check_database_name(name: str) -> None:
    """Raise ConfigError for a database name MongoDB refuses or would read otherwise."""
    bad = [c for c in '/\\. "$\x00' if c in name]
    if not name or bad or len(name) > MAX_DATABASE_NAME:
        raise ConfigError(f"bad MongoDB database name {name!r}: it must be 1 to {MAX_DATABASE_NAME} characters, "
                          f"without / \\ . space \" $ or NUL (mongodb_url's path or mongodb_database)")

class MongoJobStore:
    """Job documents in one MongoDB collection (see the module docstring for its shape).

    Implements the :class:`runtime.store.JobStore` contract; ``live`` is the Redis store of
    the same deployment (the live documents, which the worker writes). Raises ConfigError
    without pymongo or URL; the read methods raise StoreUnavailable when MongoDB cannot be
    reached, the write methods pymongo's own errors (``unreachable_errors``: the worker
    buffers and retries).
    """

    #: the list_jobs filters answered from an index
    indexed: frozenset[str] = frozenset({"status", "queue", "path", "worker", "exc"})

    def __init__(self, settings: Settings, live: RedisJobStore, client: Any = None) -> None:
        from pymongo.write_concern import WriteConcern
        self.settings = settings
        self.live = live
        self.client = client or mongo_client(settings)
        try:
            default = self.client.get_default_database(default="runtime").name
            check_database_name(settings.mongodb_database or _url_database(settings.mongodb_url) or default)
            w: int | str = int(settings.mongodb_w) if settings.mongodb_w.isdigit() else settings.mongodb_w
            self.db = self.client.get_database(
                settings.mongodb_database or default,
                write_concern=WriteConcern(w=w, j=bool(settings.mongodb_journal),
                                           wtimeout=int(settings.mongodb_timeout_s * 1000)))
            self.jobs = self.db[settings.mongodb_collection]
        except Exception as exc:
            if client is None:
                self.client.close()
            if isinstance(exc, ConfigError):
                raise
            mapped = translate(exc, settings.mongodb_url)
            if mapped is None:
                raise ConfigError(f"bad MongoDB database or collection: {short_error(exc)}") from None
            raise mapped from None
        #: this deployment's Redis key prefix, written in every document
        self.prefix = settings.key_prefix
        #: deployments of other prefixes may share the collection: every filter names ours
        self.shared = bool(settings.mongodb_shared)
        #: the ownership check passed (check_owner)
        self.owner_checked = False
        #: this deployment's id (runtime.store.mongo.deployment), known once the check passed
        self.deployment: str | None = None

    def scope(self, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """``query`` restricted to this deployment's documents: as it is when the collection
        is ours alone, with our prefix when it is shared."""
        return {"prefix": self.prefix, **(query or {})} if self.shared else dict(query or {})

    def check_owner(self) -> None:
        """Refuse a collection owned by another deployment (ConfigError), once per store;
        runtime.store.mongo.deployment. Raises pymongo's and redis's errors when they
        cannot be reached (and checks again next time)."""
        if not self.owner_checked:
            self.deployment = check_owner(self.jobs, self.live.client, self.prefix, self.shared)
            self.owner_checked = True

    def touch(self, worker: str) -> dict[str, Any] | None:
        """Record that ``worker`` of this deployment is alive (for ALIVE_SWEEPS sweep
        intervals); after :meth:`check_owner`. Returns None while the collection is ours,
        else the marker of the deployment that took it over. Raises redis's and pymongo's
        errors."""
        self.check_owner()
        return touch(self.jobs, self.live.client, self.prefix, str(self.deployment), worker,
                     ALIVE_SWEEPS * self.settings.mongodb_sweep_interval_s, self.shared)

    # ---- indexes ----------------------------------------------------------------------

    def ensure_indexes(self) -> list[str]:
        """Create every index of :data:`INDEXES` (existing ones are kept) and drop those of
        earlier layouts, after the ownership check; returns their names."""
        from pymongo import IndexModel
        self.check_owner()
        existing = self.jobs.index_information()
        for name, info in existing.items():  # of earlier layouts, or of a name declared with other keys now
            declared = INDEXES.get(name)
            if name in LEGACY_INDEXES or (declared and [tuple(k) for k in info["key"]] != list(declared[0])):
                self.jobs.drop_index(name)
        names = list(self.jobs.create_indexes(
            [IndexModel(keys, name=name, **opts) for name, (keys, opts) in INDEXES.items()]))
        if self.jobs.find_one(self.scope({"changed_at": {"$type": "number"}}), {"_id": 1}) is not None:
            log.warning("%s holds documents of the first layout (times as UNIX seconds, which date queries "
                        "and pages after the first do not match): run `runtime mongo migrate` once",
                        self.jobs.full_name)
        elif self.jobs.find_one(self.scope({"schema": 2}), {"_id": 1}) is not None:
            log.warning("%s holds documents of schema 2 (without exc_name, which a filter by exception type "
                        "needs): run `runtime mongo migrate` once", self.jobs.full_name)
        return names

    def restore_indexes(self) -> list[str]:
        """Create again the indexes of :data:`INDEXES` the collection lacks (a MongoDB that
        restarted without its data); returns their names (none: one look-up, nothing
        created)."""
        existing = self.jobs.index_information()
        missing = [name for name in INDEXES if name not in existing]
        if missing:
            self.ensure_indexes()
        return missing

    def migrate(self, batch: int = 500) -> int:
        """Bring every document of this deployment of an earlier layout to the current one
        (runtime.store.mongo.migration), after the ownership check; returns how many were
        written. Raises pymongo's errors."""
        from .migration import migrate
        self.check_owner()
        return migrate(self, batch)

    # ---- reads (the JobStore contract) ------------------------------------------------

    @_read
    def get(self, job_id: str) -> Job:
        """The document of ``job_id`` with its history; from Redis while its copy is pending
        or when MongoDB does not have it (runtime.store.mongo.pending). Raises JobNotFound."""
        found = self.get_many([job_id])[0]
        if found is None:
            raise JobNotFound(f"no job {job_id!r} (never queued, or its document expired)")
        return found

    @_read
    def get_many(self, ids: Sequence[str], history: bool = True) -> list[Job | None]:
        """Documents of ``ids`` in order; None for a missing one. Those pending or missing
        in MongoDB are read from Redis."""
        if not ids:
            return []
        pending = set(pending_ids(self.live)).intersection(ids)
        wanted = [i for i in ids if i not in pending]
        projection = None if history else {"history": 0}
        # one id: an equality on _id (a job's page), which every server answers by its key
        docs = ([d] if (d := self.jobs.find_one(self.scope({"_id": wanted[0]}), projection)) else []) \
            if len(wanted) == 1 else self.jobs.find(self.scope({"_id": {"$in": wanted}}), projection) if wanted else []
        found = {d["_id"]: job_from_document(d) for d in docs}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update((j.id, j) for j in self.live.get_many(missing, history) if j is not None)
        return [found.get(i) for i in ids]

    @_read
    def list_jobs(self, status: str | None = None, queue: str | None = None, path: str | None = None,
                  limit: int = 50, history: bool = False, before: tuple[float, str] | None = None,
                  statuses: Sequence[str] | None = None, worker: str | None = None,
                  exc_name: str | None = None) -> list[Job]:
        """Up to ``limit`` jobs matching every given filter, newest change first, those
        changed before the cursor ``before`` (change time, id) only: one query, and the
        pending jobs from Redis (runtime.store.mongo.pending). ``exc_name``: the class name
        of their exception type (runtime.job.exc_name)."""
        query: dict[str, Any] = self.scope()
        if before is not None:
            when = to_date(before[0])
            query["$or"] = [{"changed_at": {"$lt": when}}, {"changed_at": when, "_id": {"$lt": before[1]}}]
        if status:
            query["status"] = Status(status).value
        if statuses is not None:  # one walk of the status index merging their ranges
            query["status"] = {"$in": [Status(x).value for x in statuses]}
        if queue:
            query["queue"] = queue
        if worker:
            query["worker"] = worker
        if exc_name:
            query["exc_name"] = exc_name
        if path:
            query["path"] = path
        pending = pending_ids(self.live)
        projection = None if history else {"history": 0, "artifacts": 0}
        cursor = self.jobs.find(query, projection).sort([("changed_at", -1), ("_id", -1)])
        if limit < 10**9:
            cursor = cursor.limit(max(0, limit + len(pending)))
        stored = [(to_seconds(d.get("changed_at") or 0.0), job_from_document(d)) for d in cursor]
        if not pending:
            return [job for _, job in stored]
        filters = {"status": status, "queue": queue, "path": path, "before": before}
        page = merge_page(stored, self.live.get_many(pending), set(pending), filters, limit + len(pending), history)
        return [j for j in page if (statuses is None or j.status.value in statuses)
                and (worker is None or j.worker == worker) and (exc_name is None or name_of(j.exc_type) == exc_name)
                ][:limit]

    def sortable(self, sort: str, status: str | None) -> bool:
        """Does a declared index answer :meth:`list_sorted` of ``sort`` with ``status``?
        Every sort has one, alone and after a status (runtime.store.mongo.documents)."""
        return sort in SORT_FIELDS

    @_read
    def list_sorted(self, sort: str, status: str | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None) -> list[tuple[float, Job]]:
        """Up to ``limit`` (sort value, job) of ``status`` (None: any) that have the sort's
        field (:data:`SORT_FIELDS`: UNIX s, or seconds of run), largest first, ties highest
        id first, those before the cursor ``before`` (value, id) only: one query on a
        declared index, and the pending jobs from Redis. Raises ValueError for an unknown
        sort."""
        if sort not in SORT_FIELDS:
            raise ValueError(f"unknown sort {sort!r} (one of {', '.join(SORT_FIELDS)})")
        name = SORT_FIELDS[sort]
        as_db = (lambda v: v) if name == "run_s" else to_date
        query: dict[str, Any] = self.scope({name: {"$ne": None}})
        if before is not None:
            query["$or"] = [{name: {"$lt": as_db(before[0])}}, {name: as_db(before[0]), "_id": {"$lt": before[1]}}]
        if status:
            query["status"] = Status(status).value
        pending = set(pending_ids(self.live))
        cursor = self.jobs.find(query, {"history": 0, "artifacts": 0}).sort([(name, -1), ("_id", -1)])
        rows = [(float(to_seconds(d[name])), job_from_document(d)) for d in cursor.limit(limit + len(pending))]
        if pending:
            rows = [r for r in rows if r[1].id not in pending]
            for job in self.live.get_many(sorted(pending), history=False):
                value = getattr(job, name, None) if job is not None else None
                if job is None or value is None or (status and job.status.value != status):
                    continue
                if before is None or (round(value, 3), job.id) < (round(before[0], 3), before[1]):
                    job.artifacts = {}
                    rows.append((float(value), job))
            rows.sort(key=lambda r: (r[0], r[1].id), reverse=True)
        return rows[:limit]

    @_read
    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included); pending jobs
        counted under their Redis status."""
        out = {s.value: 0 for s in Status}
        pipeline = [{"$match": self.scope({"status": {"$in": list(out)}})},
                    {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        for row in self.jobs.aggregate(pipeline):
            if row["_id"] in out:
                out[row["_id"]] = int(row["n"])
        pending = pending_ids(self.live)
        if pending:
            stored = {d["_id"]: d["status"] for d in self.jobs.find(self.scope({"_id": {"$in": pending}}),
                                                                    {"status": 1})}
            adjust_counts(out, stored, self.live.get_many(pending, history=False))
        return out

    @_read
    def final_ids(self, status: str, queue: str | None = None, path: str | None = None) -> list[str]:
        """Every id with final ``status`` matching the filters (for bulk requeue)."""
        if Status(status) not in REQUEUABLE:
            raise ValueError(f"jobs of status {status} cannot be requeued")
        query: dict[str, Any] = self.scope({"status": status})
        if queue:
            query["queue"] = queue
        if path:
            query["path"] = path
        return [d["_id"] for d in self.jobs.find(query, {"_id": 1})]

    # ---- writes -----------------------------------------------------------------------

    def write(self, docs: Sequence[dict[str, Any]], fresh: bool = False) -> tuple[int, int]:
        """Store ``docs`` (from :func:`document`) in one unordered bulk write, each only
        over an older version of itself (or none). Returns (written, stale). ``fresh``:
        documents of jobs just queued (version 1), inserted: one that exists already is
        as new or newer (a stale write, refused with duplicate key).

        A document MongoDB refuses (or that cannot be encoded) is logged and skipped, never
        stopping the others. Raises pymongo's errors when MongoDB is unreachable (see
        :func:`unreachable_errors`) or a write concern fails.
        """
        if not docs:
            return 0, 0
        from pymongo import InsertOne, ReplaceOne
        from pymongo.errors import BulkWriteError
        ops: list[Any] = [InsertOne(d) for d in docs] if fresh else [
            ReplaceOne({"_id": d["_id"], "prefix": d["prefix"], "version": {"$lt": d["version"]}}, d, upsert=True)
            for d in docs]
        try:
            res = self.jobs.bulk_write(ops, ordered=False)
            if fresh:
                return res.inserted_count, 0
            return res.upserted_count + res.modified_count, len(docs) - res.upserted_count - res.matched_count
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            errors = exc.details.get("writeErrors", [])
            stale = sum(e.get("code") == DUPLICATE_KEY for e in errors)
            for e in errors:  # one refused document never stops the others
                if e.get("code") != DUPLICATE_KEY:
                    log.error("job %s: MongoDB refused its document (%s); not copied", docs[e["index"]]["_id"],
                              str(e.get("errmsg"))[:300])
            written = int(exc.details.get("nInserted", 0)) + int(exc.details.get("nUpserted", 0))
            return written + int(exc.details.get("nModified", 0)), stale
        except unreachable_errors():
            raise
        except Exception as exc:  # noqa: BLE001 - refused before sending (encoding): write one by one
            if len(docs) == 1:
                log.error("job %s: its document cannot be sent to MongoDB (%s: %s); not copied",
                          docs[0]["_id"], type(exc).__name__, str(exc)[:300])
                return 0, 0
            written = stale = 0
            for d in docs:
                w, st = self.write([d], fresh)
                written, stale = written + w, stale + st
            return written, stale

    def set_progress(self, job_id: str, fields: dict[str, str]) -> None:
        """Write a running job's progress fields (strings, as stored in Redis)."""
        values: dict[str, Any] = {}
        for k, v in fields.items():
            values[k] = float(v) if k == "progress" else json.loads(v) if k == "logs" else v
        self.jobs.update_one(self.scope({"_id": job_id, "status": Status.STARTED.value}), {"$set": values})

    def versions(self, ids: Sequence[str]) -> dict[str, int]:
        """Stored version of each of ``ids`` that has a document."""
        return {d["_id"]: int(d.get("version", 0))
                for d in self.jobs.find(self.scope({"_id": {"$in": list(ids)}}), {"version": 1})}
