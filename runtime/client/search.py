"""Job filters beyond the store's indexes, and failures grouped: the pure parts of the
read API's searches (runtime.client.reader.Reader.search and .failures run them).

The job stores index jobs by status and time of last change (and MongoDB by queue, path,
worker and exception type too); another filter (params text...) is checked on each document
read, newest first, within a bound of documents per call (``budget``) so that a page
never costs a scan of the whole store.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from ..job import Job, iso
from ..redact import redact
from ..status import Status

#: Statuses a failure group gathers: the job ended without a result.
FAILED_STATUSES = (Status.FAILED.value, Status.MAXRETRIES.value, Status.TIMEOUT.value)


@dataclass(frozen=True)
class JobFilter:
    """What a listing keeps: every given field must match (None: any).

    ``status``, ``queue``, ``path``, ``worker`` and ``exc_type`` match exactly (``exc_type``
    also matches by its last dotted part: ``ValueError`` and ``builtins.ValueError`` alike);
    ``text``: a case-insensitive substring of the params' JSON (compact, or with a space
    after each ``:`` and ``,``); with ``secret_keys`` (the dashboard's), of the params as
    shown: the values of matching keys and the secrets of URLs and ``key=value`` strings
    masked as ``***``, so a search never tells what a hidden value holds; ``since`` and ``until``:
    the time of the job's last change, UNIX seconds, both bounds included; ``min_run_s``:
    jobs that ran at least that many seconds."""

    status: str | None = None
    queue: str | None = None
    path: str | None = None
    worker: str | None = None
    exc_type: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None
    #: jobs that ran at least this long, seconds (a slow job: its page has its profile)
    min_run_s: float | None = None
    #: keys whose values the text search does not look into (None: it searches every value)
    secret_keys: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in {s.value for s in Status}:
            raise ValueError(f"unknown status {self.status!r}: give one of {', '.join(s.value for s in Status)}")
        for name in ("since", "until", "min_run_s"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):  # NaN matches nothing, inf everything
                what = "seconds" if name == "min_run_s" else "UNIX seconds"
                raise ValueError(f"{name} must be a finite number of {what}, got {value!r}")

    def indexed(self, indexes: frozenset[str]) -> bool:
        """Can a store with ``indexes`` (of status, queue, path) answer it from them alone?"""
        if any(v is not None for v in (self.worker, self.exc_type, self.text, self.since, self.min_run_s)):
            return False
        return all(getattr(self, name) is None or name in indexes for name in ("status", "queue", "path"))

    def matches(self, job: Job) -> bool:
        """Does ``job`` pass every filter but the time range (the listing's order bounds it)?"""
        for name, value in (("status", job.status.value), ("queue", job.queue), ("path", job.path)):
            wanted = getattr(self, name)
            if wanted is not None and value != wanted:
                return False
        if self.worker is not None and job.worker != self.worker:
            return False
        if self.min_run_s is not None and (job.run_s is None or job.run_s < self.min_run_s):
            return False
        if self.exc_type is not None:
            exc = job.exc_type or ""
            if self.exc_type not in (exc, exc.rpartition(".")[2]) and exc != self.exc_type.rpartition(".")[2]:
                return False
        if self.text is not None:
            needle = self.text.lower()
            shown = job.params if self.secret_keys is None else redact(job.params, self.secret_keys)
            compact = json.dumps(shown, ensure_ascii=False, separators=(",", ":")).lower()
            if needle not in compact and needle not in json.dumps(shown, ensure_ascii=False).lower():
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (for a URL query or a record of what an action took)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None and f.name != "secret_keys"}


@dataclass
class Group:
    """Failures of one (exception type, task path[, worker]): how many within what was read,
    first and last seen (UNIX s), and the newest one as the example."""

    exc_type: str
    path: str
    worker: str | None
    count: int
    first_seen: float
    last_seen: float
    example: Job

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; times as ISO-8601 UTC; the example as its id, message and traceback."""
        return {"exc_type": self.exc_type, "path": self.path, "worker": self.worker, "count": self.count,
                "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
                "example": {"id": self.example.id, "status": self.example.status.value,
                            "exc_message": self.example.exc_message, "traceback": self.example.traceback}}


def group_failures(jobs: Iterable[Job], by_worker: bool = False) -> list[Group]:
    """``jobs`` (failed ones, newest first) grouped by exception type (or the reason when
    there is none: ``worker-lost``...) and task path, and worker with ``by_worker``; the
    largest group first, ties by last seen."""
    groups: dict[tuple[str, str, str | None], Group] = {}
    for job in jobs:
        exc = job.exc_type or job.reason or job.status.value
        key = (exc, job.path, job.worker if by_worker else None)
        when = job.ended_at or job.changed_at or job.queued_at or 0.0
        g = groups.get(key)
        if g is None:
            groups[key] = Group(exc, job.path, key[2], 1, when, when, job)
            continue
        g.count += 1
        g.first_seen = min(g.first_seen, when)
        if when > g.last_seen:
            g.last_seen, g.example = when, job
    return sorted(groups.values(), key=lambda g: (-g.count, -g.last_seen))
