"""A page of jobs and its cursor: what every listing of the read API returns
(runtime.client.reader, runtime.client.sorting)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..job import Job


@dataclass
class Page:
    """One page of jobs, newest change first; ``next`` is the cursor of the page after it
    (pass it as ``before``), None on the last page; ``total``: how many jobs match the
    filters in all (None when the store cannot count them cheaply: a queue or path filter
    on Redis, which has no index of them)."""

    jobs: list[Job]
    next: str | None = None
    total: int | None = None
    #: documents a search read to fill the page (None: the store answered from its index)
    scanned: int | None = None
    #: the search stopped at its budget before filling the page: ``next`` goes on from there
    partial: bool = False
    #: jobs a sort without an index ordered (those of the newest of the filter that have
    #: the sort's value: the others are not listed; None: an index's order) and the
    #: change cursor of that window's newest, for the next pages (runtime.client.sorting)
    window: int | None = None
    within: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"jobs": [job dicts without history], "next": cursor or None, "total": n or
        None, "scanned": n or None, "partial": bool}``."""
        return {"jobs": [j.to_dict(history=False) for j in self.jobs], "next": self.next, "total": self.total,
                "scanned": self.scanned, "partial": self.partial, "window": self.window, "within": self.within}


def cursor_of(job: Job) -> str:
    """The pagination cursor just after ``job`` (its last change time and id)."""
    changed = job.changed_at
    if changed is None:  # not read from a listing's index: its history's last change
        changed = job.history[-1]["at"] if job.history else (job.ended_at or job.started_at or job.queued_at or 0.0)
    return f"{float(changed):.6f}:{job.id}"


def parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    """(change time, id) from a cursor made by :func:`cursor_of`; None for none.
    Raises ValueError for a malformed one."""
    if cursor is None:
        return None
    when, _, job_id = cursor.partition(":")
    try:
        changed = float(when)
    except ValueError:
        changed = math.nan
    if not job_id or not math.isfinite(changed):
        raise ValueError(f"bad cursor {cursor!r}: give the one a page printed (TIME:ID)")
    return changed, job_id
