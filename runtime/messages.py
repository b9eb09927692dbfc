"""What crosses between the producer, the broker and the worker, as plain data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .hashfields import REPORT_FIELDS
from .status import Status


@dataclass(slots=True)
class NewJob:
    """What enqueue writes: id, path, params already encoded as JSON, queue, priority,
    the delay before it may start (seconds, 0 = now), and what producer middleware
    attached (``meta``, JSON: the trace context...). ``unique_key`` (or ""): while
    ``{p}:u:{key}`` names a job that exists, for ``unique_for_s`` seconds after the first
    enqueue, enqueue returns that job instead (runtime.unique)."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    delay_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    unique_key: str = ""
    unique_for_s: float = 0.0


@dataclass(slots=True)
class Claimed:
    """A claimed job as the worker needs it. Times are UNIX seconds of the Redis clock.
    ``alone``: it must run with nothing beside it (it was running when a worker died).
    ``problem``: what is wrong with its document when it cannot be read (the job then
    fails alone, runtime.errors.BadDocument; the fields that could not be read are
    zeros and empties)."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    attempt: int
    retries: int
    lost: int
    queued_at: float
    due_at: float
    started_at: float
    meta: dict[str, Any]
    alone: bool = False
    problem: str | None = None


@dataclass(slots=True)
class Outcome:
    """The end of one attempt of a job of ``queue``: new status, its number (ttl_s when
    final, delay_s for a retry, unused otherwise), a history note, fields to store
    (strings), and more members of its history entry (history_members)."""

    id: str
    queue: str
    attempt: int
    status: Status
    number: float = 0.0
    note: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    #: ``',"trace_id":"...","error":"..."'``: JSON members appended to the history entry
    history_tail: str = ""
    #: what Redis keeps of a success (task option ``keep``, one of KEEP); other statuses
    #: keep everything
    keep: str = "full"


#: What Redis may keep of a job that succeeded (task option ``keep``): its whole document;
#: its status, times, params and result; nothing.
KEEP = ("full", "compact", "none")

#: Fields a compact success leaves out (finish.lua deletes those written while it ran).
NOT_COMPACT = (*REPORT_FIELDS, "logs", "artifacts", "progress", "progress_message")

#: Longest ``error`` of a history entry, characters (type and message; the job keeps the
#: last attempt's whole message and traceback).
HISTORY_ERROR_CHARS = 200


def history_members(trace_id: str | None, exc_type: str | None, exc_message: str | None) -> str:
    """The history entry's members for an attempt: its ``trace_id`` and ``error``
    ("Type: message", cut at HISTORY_ERROR_CHARS), as a JSON fragment for Outcome."""
    out = ""
    if trace_id:  # hex digits: nothing to escape
        out += ',"trace_id":' + ('"' + trace_id + '"' if trace_id.isalnum() else json.dumps(trace_id))
    if exc_type:
        error = f"{exc_type}: {exc_message or ''}"
        out += ',"error":' + json.dumps(error[:HISTORY_ERROR_CHARS])
    return out
