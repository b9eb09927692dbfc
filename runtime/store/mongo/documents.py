"""The MongoDB job document: its shape, its indexes, and how a Job becomes one and back.

One document per job, ``_id`` = job id; the fields of :class:`runtime.job.Job` (times as
UNIX seconds, floats, as in Redis) plus:

- ``prefix``: the Redis key prefix of the deployment that owns the job. Deployments
  (prefixes) may share a collection: every read, count, write filter, sweep and adoption
  is scoped to the store's own prefix, and every index leads with it.
- ``version``: the length of the job's Redis history. Every status change appends one
  history entry in the same Lua script, so the version grows with each change and a
  write carrying a lower or equal version is refused by its filter
  (``MongoJobStore.write``): a late or replayed write never overwrites a newer status,
  a final one included.
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

Every index the CLI and API need is declared once in :data:`INDEXES`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from ...job import Job
from ...settings import Settings
from ...status import FINAL, Status

#: Every index of the job collection: name -> (keys, options). Queries they serve:
#: jobs by status (+queue) newest first; by path (+status); by queue; by worker; by
#: date; the reconcile sweep (status + changed_at); TTL expiry.
#: Every index but the TTL one (which MongoDB allows on one field only) leads with
#: ``prefix``: every query is scoped to one deployment's key prefix (runtime.store.mongo.sync).
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
CUTTABLE = ("artifacts", "report", "logs", "result", "traceback", "params", "meta")
_JOB_FIELDS = [f.name for f in fields(Job)]
#: Code MongoDB answers an upsert whose filter missed an existing _id with (a stale write).
DUPLICATE_KEY = 11000


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
        doc["expire_at"] = datetime.fromtimestamp(end + settings.mongodb_ttl_s[job.status], UTC)
    return cap_document(make_storable(doc), settings.mongodb_max_doc_bytes)


def job_from_document(doc: dict[str, Any]) -> Job:
    """A :class:`Job` from a stored document (extra fields ignored)."""
    kw = {name: doc[name] for name in _JOB_FIELDS if name in doc and doc[name] is not None}
    for name in doc.get("as_json") or ():  # stored as JSON text: BSON could not hold it
        marker = kw.get(name)
        if isinstance(marker, dict) and isinstance(marker.get("json"), str):
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
    if "artifacts" in doc.get("truncated", ()) or set(kw.get("artifacts") or ()) == {"truncated"}:
        kw.pop("artifacts", None)  # cut to fit: the job shows as having none
    return Job(**kw)
