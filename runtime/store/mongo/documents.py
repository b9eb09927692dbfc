"""The MongoDB job document: its shape, its indexes, and how a Job becomes one and back.

One document per job, ``_id`` = job id, every field of :class:`runtime.job.Job`, with
every time a BSON date (UTC; MongoDB keeps milliseconds): ``queued_at``, ``due_at``,
``started_at``, ``ended_at``, ``history[].at`` (the Job keeps UNIX seconds, as Redis
does). docs/mongodb.md describes each field for users, with example queries. Added:

- ``prefix``: the Redis key prefix of the deployment that owns the job (one deployment
  per collection unless shared: runtime.store.mongo.deployment).
- ``version``: the length of the job's Redis history. Every status change appends one
  history entry in the same Lua script, so the version grows with each change and a
  write carrying a lower or equal version is refused by its filter
  (``MongoJobStore.write``): a late or replayed write never overwrites a newer status,
  a final one included.
- ``changed_at``: date of the last status change (sort key: newest first, ties by ``_id``
  highest first, as the Redis store).
- ``exc_name``: the class name of ``exc_type`` (its last dotted part, runtime.job.exc_name),
  null without one: the jobs list's filter by exception type walks its index.
- ``wait_s``: seconds from due to started (queue wait); ``run_s``: seconds from started to
  ended; null until known (the Job's ``wait_s`` and ``run_s``), as is every field of the
  Job not known yet.
- ``expire_at``: for a final status, when the document goes (``mongodb_ttl_s`` of that
  status: months by default, independent of Redis's ``ttl_s``), for the TTL index;
  absent otherwise (and with a ``mongodb_ttl_s`` of 0: kept forever).
- ``schema``: 3 (this layout). Documents without it are of the first layout (times as
  UNIX seconds, values BSON refused as whole-field JSON text under ``as_json``); those of
  schema 2 lack ``exc_name``. They are still read (a filter by exception type does not
  find the jobs of schema 2), and ``runtime mongo migrate`` brings them to this layout.
- ``converted``: what had to change for MongoDB to store a value, value by value, the
  shape kept (runtime.store.mongo.storable); absent when nothing did.
- ``truncated``: names of the fields cut to fit ``mongodb_max_doc_bytes``, whose values
  were replaced by ``{"truncated": "N bytes, over mongodb_max_doc_bytes=M"}``.

Every index the CLI, the sweep and the documented queries need is declared once in
:data:`INDEXES`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from ...job import Job, exc_name
from ...settings import Settings
from ...status import FINAL, Status
from .storable import has_escaped_keys, restore, storable

#: Every index of the job collection: name -> (keys, options), and what it serves.
#: None leads with ``prefix``: a collection holds one deployment unless explicitly
#: shared (runtime.store.mongo.deployment), so queries need no prefix to use them.
INDEXES: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {
    # runtime jobs --status --queue; queues' counts; the sweep's adoption (status + change)
    "status_queue_changed": ([("status", 1), ("queue", 1), ("changed_at", -1)], {}),
    # runtime jobs --status, newest change first (the index above sorts by change only
    # within a queue); the dashboard's failure groups
    "status_changed": ([("status", 1), ("changed_at", -1), ("_id", -1)], {}),
    # runtime jobs --path, newest change first (the index below sorts by change only within
    # a status)
    "path_changed": ([("path", 1), ("changed_at", -1)], {}),
    # runtime jobs --path --status; requeue --path; a task's jobs by param value
    "path_status_changed": ([("path", 1), ("status", 1), ("changed_at", -1)], {}),
    # runtime jobs --queue
    "queue_changed": ([("queue", 1), ("changed_at", -1)], {}),
    # the jobs a worker ran
    "worker_changed": ([("worker", 1), ("changed_at", -1)], {}),
    # runtime jobs (no filter), newest change first
    "changed": ([("changed_at", -1), ("_id", -1)], {}),
    # a task's failures (or successes) since a date
    "path_status_ended": ([("path", 1), ("status", 1), ("ended_at", -1)], {}),
    # every task's failures (or successes) since a date: per exception type, mean times
    "status_ended": ([("status", 1), ("ended_at", -1)], {}),
    # everything that ended since a date: counts per day
    "ended": ([("ended_at", -1)], {}),
    # the latest jobs that raised an exception type
    "exc_type_ended": ([("exc_type", 1), ("ended_at", -1)], {}),
    # the dashboard's jobs of an exception type (by its class name), newest change first;
    # and of one failure group (exception, task path, status: the failures page's links)
    "exc_changed": ([("exc_name", 1), ("changed_at", -1), ("_id", -1)], {}),
    "exc_path_status_changed": ([("exc_name", 1), ("path", 1), ("status", 1), ("changed_at", -1)], {}),
    # a task's slowest jobs
    "path_run": ([("path", 1), ("run_s", -1)], {}),
    # the dashboard's jobs sorted by queue time, start or duration (end: "ended"), of any
    # status or of one (end: "status_ended")
    "queued_id": ([("queued_at", -1), ("_id", -1)], {}),
    "started_id": ([("started_at", -1), ("_id", -1)], {}),
    "run_id": ([("run_s", -1), ("_id", -1)], {}),
    "status_queued": ([("status", 1), ("queued_at", -1)], {}),
    "status_started": ([("status", 1), ("started_at", -1)], {}),
    "status_run": ([("status", 1), ("run_s", -1)], {}),
    # TTL expiry of final documents
    "expire_at_ttl": ([("expire_at", 1)], {"expireAfterSeconds": 0}),
}
#: A sort of the jobs list (runtime.client.sorting) -> the document field it orders by.
SORT_FIELDS = {"changed": "changed_at", "queued": "queued_at", "started": "started_at", "ended": "ended_at",
               "run": "run_s"}
#: Indexes of earlier layouts, dropped by ensure_indexes.
LEGACY_INDEXES = ("queued_at", "prefix_status_queue_changed",
                  "prefix_path_status_changed", "prefix_queue_changed", "prefix_worker_changed", "prefix_changed",
                  "prefix_queued_at")

#: The layout of the documents this module writes (their ``schema`` field).
SCHEMA = 3
#: Fields of a Job holding a time (UNIX seconds in the Job, dates in the document).
TIMES = ("queued_at", "due_at", "started_at", "ended_at", "changed_at")
#: Fields cut first when a document is over the size cap (largest first among these).
CUTTABLE = ("artifacts", "report", "logs", "result", "traceback", "params", "meta")
_JOB_FIELDS = [f.name for f in fields(Job)]
#: Fields made by runtime itself, always storable as they are.
_KEPT = frozenset(("_id", "prefix", "status", "version", "changed_at", "expire_at", "history", "schema",
                   "wait_s", "run_s", "exc_name", *TIMES))
#: Code MongoDB answers an upsert whose filter missed an existing _id with (a stale write).
DUPLICATE_KEY = 11000


def to_date(seconds: float) -> datetime:
    """UNIX seconds as an aware UTC datetime (stored by MongoDB to the millisecond)."""
    return datetime.fromtimestamp(seconds, UTC)


def to_seconds(value: Any) -> Any:
    """A stored time as UNIX seconds: a date (naive ones are UTC), or a number of the layout
    before; anything else as it is."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return value


def _bson_size(value: Any) -> int:
    import bson
    return len(bson.encode({"v": value}))


def cap_document(doc: dict[str, Any], max_bytes: int, size: int | None = None) -> dict[str, Any]:
    """``doc`` (changed in place) with its largest cuttable fields replaced by a marker
    until its BSON encoding (``size`` bytes, when known) is at most ``max_bytes``; the
    history keeps its first 20 and last 200 entries. Names of the cut fields are listed
    in ``doc["truncated"]``."""
    import bson
    size = len(bson.encode(doc)) if size is None else size
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
        if doc.get("converted"):  # conversions inside a cut field are gone with it
            doc["converted"] = [c for c in doc["converted"] if c.partition(":")[2].split(".")[0] not in cut]
    return doc


def document(job: Job, version: int, settings: Settings) -> dict[str, Any]:
    """The MongoDB document of ``job`` at ``version`` (its Redis history length): times as
    dates, each value BSON refuses converted where it stands (listed in ``converted``),
    then cut to ``mongodb_max_doc_bytes``."""
    doc: dict[str, Any] = {"_id": job.id, "prefix": settings.key_prefix, "schema": SCHEMA}
    for name in _JOB_FIELDS:
        if name == "id":
            continue
        value = getattr(job, name)
        if isinstance(value, Status):
            value = value.value
        elif name in TIMES and value is not None:
            value = to_date(value)
        elif name == "history":
            value = [{**h, "at": to_date(h["at"])} if isinstance(h.get("at"), (int, float)) else h for h in value]
        doc[name] = value
    doc["version"] = version
    last = job.history[-1].get("at") if job.history else None
    changed = float(last if last is not None else job.ended_at or job.started_at or job.queued_at or 0.0)
    doc["changed_at"] = to_date(changed)
    doc["exc_name"] = exc_name(job.exc_type)
    for name in ("wait_s", "run_s"):
        seconds = getattr(job, name)
        doc[name] = round(seconds, 6) if seconds is not None else None
    if job.status in FINAL and settings.mongodb_ttl_s[job.status] > 0:
        end = job.ended_at or changed
        doc["expire_at"] = to_date(end + settings.mongodb_ttl_s[job.status])
    size = _encoded_size(doc)
    if size is None:  # something BSON or MongoDB refuses: convert it where it stands
        converted: list[str] = []
        for name in _JOB_FIELDS:
            if name == "history":
                doc[name] = [{k: storable(v, f"history.{i}.{k}", converted) for k, v in h.items()}
                             for i, h in enumerate(doc[name])]
            elif name in doc and name not in _KEPT:
                doc[name] = storable(doc[name], name, converted)
        if converted:
            doc["converted"] = converted
        exc = doc.get("exc_type")  # as converted (a str BSON takes, or a marker)
        doc["exc_name"] = exc_name(exc) if isinstance(exc, str) else None
    return cap_document(doc, settings.mongodb_max_doc_bytes, size)


def _encoded_size(doc: dict[str, Any]) -> int | None:
    """Bytes of ``doc`` in BSON when it can be stored as it is (BSON encodes it, no key
    needs escaping), else None."""
    import bson
    if any(has_escaped_keys(v) for k, v in doc.items() if k not in _KEPT or k == "history"):
        return None
    try:
        return len(bson.encode(doc))
    except Exception:  # noqa: BLE001 - InvalidDocument, OverflowError, UnicodeEncodeError...
        return None


def job_from_document(doc: dict[str, Any]) -> Job:
    """A :class:`Job` from a stored document of this layout or the one before (extra
    fields ignored; ``doc`` may be changed in place)."""
    if doc.get("converted"):
        restore(doc, doc["converted"])
    kw = {name: doc[name] for name in _JOB_FIELDS if name in doc and doc[name] is not None}
    for name in doc.get("as_json") or ():  # the layout before: stored as JSON text
        marker = kw.get(name)
        if isinstance(marker, dict) and isinstance(marker.get("json"), str):
            kw[name] = json.loads(marker["json"])
    for name in TIMES:
        if name in kw:
            kw[name] = to_seconds(kw[name])
    if "history" in kw:
        kw["history"] = [{**h, "at": to_seconds(h["at"])} if "at" in h else h for h in kw["history"]]
    kw["id"] = doc["_id"]
    kw["status"] = Status(doc["status"])
    for name in ("params", "report", "meta"):  # a field cut to fit is shown as its marker
        if name in kw and not isinstance(kw[name], dict):
            kw[name] = {"truncated": kw[name]}
    if "logs" in kw and not isinstance(kw["logs"], list):
        kw["logs"] = [kw["logs"]]
    if isinstance(kw.get("traceback"), dict):
        kw["traceback"] = f"[traceback {kw['traceback'].get('truncated')}]"
    if "artifacts" in doc.get("truncated", ()) or set(kw.get("artifacts") or ()) == {"truncated"}:
        kw.pop("artifacts", None)  # cut to fit: the job shows as having none
    return Job(**kw)
