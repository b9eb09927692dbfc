"""Bringing the documents of earlier layouts to the current one (``runtime mongo
migrate``; the layouts: runtime.store.mongo.documents).

Documents of the first layout (no ``schema``: times as UNIX seconds, ``as_json``) are
rewritten whole; those of schema 2 only get ``exc_name`` (the class name of their
``exc_type``) and the new schema number. Each write applies only if nobody rewrote the
document meanwhile (its filter names the schema it was read at), ``batch`` documents by
id at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from ...job import exc_name
from .connection import short_error
from .documents import SCHEMA, document, job_from_document

log = logging.getLogger("runtime.mongo")

#: Documents of a layout before the current one (no schema, or a lower one).
OLD_LAYOUTS: dict[str, Any] = {"$or": [{"schema": {"$exists": False}}, {"schema": {"$lt": SCHEMA}}]}


def migrate(store: Any, batch: int = 500) -> int:
    """Bring every document of ``store``'s deployment (a MongoJobStore, its ownership
    checked) of an earlier layout to the current one; returns how many were written. One
    that cannot be read is logged and left. Raises pymongo's errors."""
    from pymongo import ReplaceOne, UpdateOne
    from pymongo.errors import BulkWriteError
    done, after = 0, ""
    while True:
        old = list(store.jobs.find(store.scope({**OLD_LAYOUTS, "_id": {"$gt": after}})).sort("_id", 1).limit(batch))
        if not old:
            return done
        after = old[-1]["_id"]
        ops: list[Any] = []
        for d in old:
            if d.get("schema") == 2:  # only exc_name is missing
                ops.append(UpdateOne({"_id": d["_id"], "schema": 2},
                                     {"$set": {"schema": SCHEMA, "exc_name": _name_of(d.get("exc_type"))}}))
                continue
            try:
                new = document(job_from_document(dict(d)), int(d.get("version") or len(d.get("history") or ())),
                               store.settings)
            except Exception as exc:  # noqa: BLE001 - one unreadable document never stops the rest
                log.error("job %s: its document cannot be read (%s); left as it is", d["_id"], short_error(exc))
                continue
            ops.append(ReplaceOne({"_id": d["_id"], "schema": {"$exists": False}}, new))
        try:
            done += store.jobs.bulk_write(ops, ordered=False).modified_count if ops else 0
        except BulkWriteError as exc:
            done += int(exc.details.get("nModified", 0))


def _name_of(exc_type: Any) -> str | None:
    return exc_name(exc_type) if isinstance(exc_type, str) else None
