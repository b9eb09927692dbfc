"""The MongoDB job store: job documents, reports included, kept and queried in MongoDB.

Redis stays the authority of live state (queues, claims, wake-ups, and every status
change, made atomically and fenced by the Lua scripts); MongoDB holds the durable,
queryable copy of each job document, and every read of a client with a MongoDB URL
(``get``, ``get_many``, ``list_jobs``, ``counts``, so ``runtime jobs``, ``job``,
``requeue``, ``queues``...) is answered here. How the copies are kept in step, and why a
crash between the two writes never loses a job nor overwrites a final status, is in
``runtime.mongo_sync``; this module is the collection itself.

One document per job, ``_id`` = job id; the fields of :class:`runtime.job.Job` (times as
UNIX seconds, floats, as in Redis) plus:

- ``prefix``: the Redis key prefix of the deployment that owns the job. Deployments
  (prefixes) may share a collection: every read, count, write filter, sweep and adoption
  is scoped to the store's own prefix, and every index leads with it.
- ``version``: the length of the job's Redis history. Every status change appends one
  history entry in the same Lua script, so the version grows with each change and a
  write carrying a lower or equal version is refused by its filter (:meth:`write`): a
  late or replayed write never overwrites a newer status, a final one included.
- ``changed_at``: time of the last status change (sort key: newest first, ties by ``_id``
  highest first, as the Redis store).
- ``expire_at``: for a final status, when the document goes (``mongodb_ttl_s`` of that
  status: months by default, independent of Redis's ``ttl_s``), as a BSON date for the
  TTL index; absent otherwise (and with a ``mongodb_ttl_s`` of 0: kept forever).
- ``as_json``: names of the fields BSON cannot store (an integer beyond 64 bits, a key
  holding "\\u0000": valid JSON, refused by BSON), each stored as ``{"unstorable": why,
  "json": its JSON text}`` and read back as the value (:func:`make_storable`).
- ``truncated``: names of the fields cut to fit ``mongodb_max_doc_bytes``, whose values
  were replaced by ``{"truncated": "N bytes, over mongodb_max_doc_bytes=M"}``.

Every index the CLI and API need is declared once in :data:`INDEXES` and created by
:meth:`MongoJobStore.ensure_indexes` (at worker start-up and by ``runtime mongo
ensure-indexes``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

from .errors import ConfigError, JobNotFound, StoreUnavailable
from .job import Job
from .settings import Settings
from .status import FINAL, Status

log = logging.getLogger("runtime.mongo")

#: Every index of the job collection: name -> (keys, options). Queries they serve:
#: jobs by status (+queue) newest first; by path (+status); by queue; by worker; by
#: date; the reconcile sweep (status + changed_at); TTL expiry.
#: Every index but the TTL one (which MongoDB allows on one field only) leads with
#: ``prefix``: every query is scoped to one deployment's key prefix (runtime.mongo_sync).
INDEXES: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {
    "prefix_status_queue_changed": ([("prefix", 1), ("status", 1), ("queue", 1), ("changed_at", -1)], {}),
    "prefix_path_status_changed": ([("prefix", 1), ("path", 1), ("status", 1), ("changed_at", -1)], {}),
    "prefix_queue_changed": ([("prefix", 1), ("queue", 1), ("changed_at", -1)], {}),
    "prefix_worker_changed": ([("prefix", 1), ("worker", 1), ("changed_at", -1)], {}),
    "prefix_changed": ([("prefix", 1), ("changed_at", -1), ("_id", -1)], {}),
    "prefix_queued_at": ([("prefix", 1), ("queued_at", -1)], {}),
    "expire_at_ttl": ([("expire_at", 1)], {"expireAfterSeconds": 0}),
}
#: Indexes of the layout before documents carried their prefix: dropped by ensure_indexes.
LEGACY_INDEXES = ("status_queue_changed", "path_status_changed", "queue_changed", "worker_changed",
                  "changed", "queued_at")

#: Fields cut first when a document is over the size cap (largest first among these).
CUTTABLE = ("profile", "report", "logs", "result", "traceback", "params", "meta")
_JOB_FIELDS = [f.name for f in fields(Job)]
#: Code MongoDB answers an upsert whose filter missed an existing _id with (a stale write).
DUPLICATE_KEY = 11000


def mongo_client(settings: Settings) -> Any:
    """A pymongo MongoClient for ``settings`` with its timeouts (no I/O yet).

    Raises ConfigError without a URL or without pymongo (``pip install 'runtime[mongo]'``).
    """
    if not settings.mongodb_url:
        raise ConfigError("no MongoDB URL: set mongodb_url, RUNTIME_MONGODB_URL or --mongodb")
    try:
        import pymongo
    except ImportError:
        raise ConfigError("the MongoDB job store needs pymongo: pip install 'runtime[mongo]'") from None
    ms = int(settings.mongodb_timeout_s * 1000)
    try:
        return pymongo.MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                                   socketTimeoutMS=ms, appname="runtime", tz_aware=True)
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
        raise (translate(exc) or ConfigError(f"bad mongodb_url: {short_error(exc)}")) from None


def translate(exc: BaseException) -> Exception | None:
    """The runtime error for a pymongo error, with one short line (None for any other):
    unreachable (a down host, a failed DNS/SRV lookup) -> StoreUnavailable (CLI exit 4);
    a bad URL, database name or option, refused credentials -> ConfigError (exit 2)."""
    try:
        from pymongo import errors
    except ImportError:
        return None
    if isinstance(exc, unreachable_errors()):
        return StoreUnavailable(f"MongoDB unavailable: {short_error(exc)}")
    if isinstance(exc, errors.OperationFailure):
        if exc.code in (13, 18) or "authenticat" in str(exc).lower():
            return ConfigError(f"MongoDB refused the credentials of mongodb_url: {short_error(exc)}")
        return None
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, errors.ConfigurationError) and (
            "DNS" in str(exc) or "resolution lifetime" in str(exc)
            or (cause is not None and type(cause).__module__.startswith("dns"))):  # SRV/TXT lookup failed
        return StoreUnavailable(f"MongoDB unavailable: {short_error(exc)}")
    if isinstance(exc, (errors.InvalidURI, errors.InvalidName, errors.ConfigurationError)):
        return ConfigError(f"bad mongodb_url: {short_error(exc)}")
    return None


def short_error(exc: BaseException) -> str:
    """One short line for a pymongo error (its server selection errors carry the whole
    topology description): the first cause, without the configured timeouts."""
    import re
    text = str(exc).split(", Timeout:")[0].split(", Topology Description:")[0].split(", full error:")[0]
    text = re.sub(r" \(configured timeouts: [^)]*\)", "", text).splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def close_before_exit(client: Any) -> None:
    """Close ``client`` in a process about to exit, without pymongo's wait at exit.

    pymongo's atexit hooks join its monitor threads, which sleep in 0.5 s steps even after
    ``close()``: about 500 ms added to every short command. Once every client is closed
    (this is for the CLI, which has one) the threads have nothing left to do; they are
    daemon threads, so the hooks are unregistered and the process exits at once."""
    import atexit
    import sys
    client.close()
    for name, attr in (("pymongo.synchronous.monitor", "_shutdown_resources"),
                       ("pymongo.asynchronous.monitor", "_shutdown_resources"),
                       ("pymongo.periodic_executor", "_shutdown_executors")):
        hook = getattr(sys.modules.get(name), attr, None)
        if hook is not None:
            atexit.unregister(hook)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The pymongo errors that mean "MongoDB cannot be reached now" (retry later)."""
    from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, NetworkTimeout, \
        ServerSelectionTimeoutError, WTimeoutError
    return (AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout,
            ExecutionTimeout, WTimeoutError)


F = TypeVar("F", bound=Callable[..., Any])


def _read(fn: F) -> F:
    """A read of the store: MongoDB unreachable raises StoreUnavailable (CLI exit code 4),
    refused credentials ConfigError (:func:`translate`)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from None
    return wrapper  # type: ignore[return-value]


def _bson_size(value: Any) -> int:
    import bson
    return len(bson.encode({"v": value}))


def cap_document(doc: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``doc`` (changed in place) with its largest cuttable fields replaced by a marker
    until its BSON encoding is at most ``max_bytes``; the history keeps its first 20 and
    last 200 entries. Names of the cut fields are listed in ``doc["truncated"]``."""
    import bson
    size = len(bson.encode(doc))
    if size <= max_bytes:
        return doc
    cut: list[str] = []
    history = doc.get("history") or []
    if len(history) > 220:
        dropped = len(history) - 220
        doc["history"] = history[:20] + [{"at": history[20].get("at"), "status": "...",
                                          "note": f"{dropped} history entries not kept"}] + history[-200:]
        cut.append("history")
    sizes = sorted(((_bson_size(doc.get(k)), k) for k in CUTTABLE if doc.get(k) is not None), reverse=True)
    for n, key in sizes:
        if len(bson.encode(doc)) <= max_bytes:
            break
        doc[key] = {"truncated": f"{n} bytes, over mongodb_max_doc_bytes={max_bytes}"}
        cut.append(key)
    if cut:
        doc["truncated"] = cut
    return doc


#: Fields never replaced by their JSON text (made by runtime itself, always storable).
_KEPT = ("_id", "prefix", "status", "version", "changed_at", "expire_at")


def _refusal(value: Any) -> str | None:
    """Why BSON cannot store ``value`` (e.g. an int over 64 bits, a key with a NUL), or None."""
    import bson
    try:
        bson.encode({"v": value})
        return None
    except Exception as exc:  # noqa: BLE001 - InvalidDocument, OverflowError, UnicodeEncodeError...
        return f"{type(exc).__name__}: {exc}"[:200]


def make_storable(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (changed in place) with every field BSON refuses replaced by
    ``{"unstorable": why, "json": its JSON text}`` and named in ``doc["as_json"]``
    (:func:`job_from_document` decodes them back). Valid JSON is not always valid BSON: an
    integer beyond 64 bits, a key holding "\\u0000", a lone surrogate."""
    import bson
    try:
        bson.encode(doc)
        return doc
    except Exception:  # noqa: BLE001 - find the fields at fault
        pass
    import json
    as_json = []
    for key in list(doc):
        if key in _KEPT:
            continue
        why = _refusal(doc[key])
        if why is not None:
            doc[key] = {"unstorable": why, "json": json.dumps(doc[key], default=repr)}
            as_json.append(key)
    if as_json:
        doc["as_json"] = as_json
    return doc


def document(job: Job, version: int, settings: Settings) -> dict[str, Any]:
    """The MongoDB document of ``job`` at ``version`` (its Redis history length)."""
    doc: dict[str, Any] = {"_id": job.id, "prefix": settings.key_prefix}
    for name in _JOB_FIELDS:
        if name == "id":
            continue
        value = getattr(job, name)
        doc[name] = value.value if isinstance(value, Status) else value
    doc["version"] = version
    last = job.history[-1].get("at") if job.history else None
    doc["changed_at"] = float(last if last is not None else job.ended_at or job.started_at or job.queued_at or 0.0)
    if job.status in FINAL and settings.mongodb_ttl_s[job.status] > 0:
        end = job.ended_at or doc["changed_at"]
        doc["expire_at"] = datetime.fromtimestamp(end + settings.mongodb_ttl_s[job.status], timezone.utc)
    return cap_document(make_storable(doc), settings.mongodb_max_doc_bytes)


def job_from_document(doc: dict[str, Any]) -> Job:
    """A :class:`Job` from a stored document (extra fields ignored)."""
    kw = {name: doc[name] for name in _JOB_FIELDS if name in doc and doc[name] is not None}
    for name in doc.get("as_json") or ():  # stored as JSON text: BSON could not hold it
        marker = kw.get(name)
        if isinstance(marker, dict) and isinstance(marker.get("json"), str):
            import json
            kw[name] = json.loads(marker["json"])
    kw["id"] = doc["_id"]
    kw["status"] = Status(doc["status"])
    for name in ("params", "report", "meta"):  # a field cut to fit is shown as its marker
        if name in kw and not isinstance(kw[name], dict):
            kw[name] = {"truncated": kw[name]}
    if "logs" in kw and not isinstance(kw["logs"], list):
        kw["logs"] = [kw["logs"]]
    if isinstance(kw.get("traceback"), dict):
        kw["traceback"] = f"[traceback {kw['traceback'].get('truncated')}]"
    if isinstance(kw.get("profile"), dict):
        kw.pop("profile")  # cut to fit: the job shows as having none
    return Job(**kw)


class MongoJobStore:
    """Job documents in one MongoDB collection (see the module docstring for its shape).

    Implements the :class:`runtime.store.JobStore` contract; ``live`` (a RedisJobStore)
    answers what only Redis knows (queue depths). Raises ConfigError without pymongo or
    URL; the read methods raise StoreUnavailable when MongoDB cannot be reached, the write
    methods pymongo's own errors (:func:`unreachable_errors`: the worker buffers and retries).
    """

    def __init__(self, settings: Settings, live: Any = None, client: Any = None) -> None:
        from pymongo.write_concern import WriteConcern
        self.settings = settings
        self.live = live
        self.client = client or mongo_client(settings)
        try:
            default = self.client.get_default_database(default="runtime").name
            w: int | str = int(settings.mongodb_w) if settings.mongodb_w.isdigit() else settings.mongodb_w
            self.db = self.client.get_database(
                settings.mongodb_database or default,
                write_concern=WriteConcern(w=w, j=bool(settings.mongodb_journal),
                                           wtimeout=int(settings.mongodb_timeout_s * 1000)))
            self.jobs = self.db[settings.mongodb_collection]
        except Exception as exc:
            if client is None:
                self.client.close()
            mapped = translate(exc)
            if mapped is None:
                raise ConfigError(f"bad MongoDB database or collection: {short_error(exc)}") from None
            raise mapped from None
        #: this deployment's Redis key prefix: leads every filter (documents of other
        #: prefixes sharing the collection are never read, counted, written nor adopted)
        self.prefix = settings.key_prefix

    def scope(self, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """``query`` restricted to this store's key prefix."""
        return {"prefix": self.prefix, **(query or {})}

    # ---- indexes ----------------------------------------------------------------------

    def ensure_indexes(self) -> list[str]:
        """Create every index of :data:`INDEXES` (existing ones are kept); returns their names."""
        from pymongo import IndexModel
        existing = set(self.jobs.index_information())
        for name in LEGACY_INDEXES:
            if name in existing:
                self.jobs.drop_index(name)
        return list(self.jobs.create_indexes(
            [IndexModel(keys, name=name, **opts) for name, (keys, opts) in INDEXES.items()]))

    # ---- reads (the JobStore contract) ------------------------------------------------

    @_read
    def get(self, job_id: str) -> Job:
        """The document of ``job_id`` with its history. Raises JobNotFound."""
        doc = self.jobs.find_one(self.scope({"_id": job_id}))
        if doc is None:
            raise JobNotFound(f"no job {job_id!r} (never queued, or its document expired)")
        return job_from_document(doc)

    @_read
    def get_many(self, ids: Sequence[str], history: bool = True) -> list[Job | None]:
        """Documents of ``ids`` in order; None for a missing one. One round trip."""
        if not ids:
            return []
        found = {d["_id"]: d for d in self.jobs.find(self.scope({"_id": {"$in": list(ids)}}),
                                                     None if history else {"history": 0})}
        return [job_from_document(found[i]) if i in found else None for i in ids]

    @_read
    def list_jobs(self, status: str | None = None, queue: str | None = None,
                  path: str | None = None, limit: int = 50, history: bool = False) -> list[Job]:
        """Up to ``limit`` jobs matching every given filter, newest change first (one query)."""
        query: dict[str, Any] = self.scope()
        if status:
            query["status"] = Status(status).value
        if queue:
            query["queue"] = queue
        if path:
            query["path"] = path
        projection = None if history else {"history": 0, "profile": 0}
        cursor = self.jobs.find(query, projection).sort([("changed_at", -1), ("_id", -1)])
        if limit < 10**9:
            cursor = cursor.limit(max(0, limit))
        return [job_from_document(d) for d in cursor]

    @_read
    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""
        out = {s.value: 0 for s in Status}
        for row in self.jobs.aggregate([{"$match": self.scope()}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
            if row["_id"] in out:
                out[row["_id"]] = int(row["n"])
        return out

    def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Per queue: ready and delayed jobs. Live state: answered by Redis."""
        if self.live is None:
            raise ConfigError("queue depths are live state: this MongoJobStore has no Redis store")
        return self.live.queue_depths(queues)  # type: ignore[no-any-return]

    @_read
    def final_ids(self, status: str, queue: str | None = None, path: str | None = None) -> list[str]:
        """Every id with final ``status`` matching the filters (for bulk requeue)."""
        if Status(status) not in FINAL and Status(status) != Status.INTERRUPT:
            raise ValueError(f"{status} is not a final status")
        query: dict[str, Any] = self.scope({"status": status})
        if queue:
            query["queue"] = queue
        if path:
            query["path"] = path
        return [d["_id"] for d in self.jobs.find(query, {"_id": 1})]

    # ---- writes -----------------------------------------------------------------------

    def write(self, docs: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Store ``docs`` (from :func:`document`) in one unordered bulk write, each only
        over an older version of itself (or none). Returns (written, stale).

        A document MongoDB refuses (or that cannot be encoded) is logged and skipped, never
        stopping the others. Raises pymongo's errors when MongoDB is unreachable (see
        :func:`unreachable_errors`) or a write concern fails.
        """
        if not docs:
            return 0, 0
        from pymongo import ReplaceOne
        from pymongo.errors import BulkWriteError
        ops = [ReplaceOne({"_id": d["_id"], "prefix": d["prefix"], "version": {"$lt": d["version"]}}, d,
                          upsert=True) for d in docs]
        try:
            res = self.jobs.bulk_write(ops, ordered=False)
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
            return int(exc.details.get("nUpserted", 0)) + int(exc.details.get("nModified", 0)), stale
        except unreachable_errors():
            raise
        except Exception as exc:  # noqa: BLE001 - refused before sending (encoding): write one by one
            if len(docs) == 1:
                log.error("job %s: its document cannot be sent to MongoDB (%s: %s); not copied",
                          docs[0]["_id"], type(exc).__name__, str(exc)[:300])
                return 0, 0
            written = stale = 0
            for d in docs:
                w, st = self.write([d])
                written, stale = written + w, stale + st
            return written, stale

    def set_progress(self, job_id: str, fields: dict[str, str]) -> None:
        """Write a running job's progress fields (strings, as stored in Redis)."""
        values: dict[str, Any] = {}
        for k, v in fields.items():
            values[k] = float(v) if k == "progress" else v
        self.jobs.update_one(self.scope({"_id": job_id, "status": Status.STARTED.value}), {"$set": values})

    def versions(self, ids: Sequence[str]) -> dict[str, int]:
        """Stored version of each of ``ids`` that has a document."""
        return {d["_id"]: int(d.get("version", 0))
                for d in self.jobs.find(self.scope({"_id": {"$in": list(ids)}}), {"version": 1})}
