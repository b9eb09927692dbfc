"""Job lists in another order than the last change: by queue time, start, end or duration,
largest first (runtime.client.reader.Reader.search with ``sort``).

A store answers a sort from an index where it has one (``JobStore.sortable``): MongoDB
for every sort, alone or after a status; Redis for the end (its final statuses' indexes),
and for queue time and start of the queued and the started jobs (their status index).
Filters beyond the index are checked on each document read, at most ``budget`` of them,
as in a search by change. Where the store has no index of the sort (Redis: duration, or
start of jobs that ended), the jobs of the filter among the newest :data:`WINDOW` (or fewer:
``window``) by change are read and ordered: the page says so (``Page.window``: how many jobs
were ordered), and its cursor stays in that window (``Page.within``), so that paging through
is stable while jobs keep changing.

Cursors are ``VALUE:ID`` (the sort value, UNIX seconds or seconds of run, and the id of
the last job shown): the next page lists what sorts after it, whatever came in since.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..job import Job
from .paging import Page, cursor_of, parse_cursor
from .search import JobFilter


class Searching(Protocol):
    """What a sort needs of the read API (runtime.client.reader.Reader is one)."""

    client: Any

    def search(self, f: JobFilter, limit: int = 20, before: str | None = None, budget: int = 1000) -> Page:
        """Jobs of ``f``, newest change first."""

#: sort -> (what a person calls it, the Job field holding its value)
SORTS: dict[str, tuple[str, str]] = {
    "changed": ("last change", "changed_at"),
    "queued": ("queue time", "queued_at"),
    "started": ("start", "started_at"),
    "ended": ("end", "ended_at"),
    "run": ("duration", "run_s"),
}
#: Jobs a sort without an index orders: the newest of the filter, by change.
WINDOW = 1000


#: Other names of a sort: ``duration`` (what the pages and docs call ``run``).
ALIASES = {"duration": "run"}


def check_sort(sort: str) -> str:
    """The key in :data:`SORTS` of ``sort`` (one of them, or of :data:`ALIASES`). Raises
    ValueError naming them."""
    sort = ALIASES.get(sort, sort)
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r} (one of {', '.join([*SORTS, *ALIASES])})")
    return sort


def value_of(job: Job, sort: str) -> float | None:
    """The value ``job`` sorts by (None: it has none: not started, not ended...)."""
    v = getattr(job, SORTS[sort][1], None)
    return float(v) if v is not None else None


def cursor(value: float, job_id: str) -> str:
    """The cursor just after the job ``job_id`` of sort value ``value``."""
    return f"{value:.6f}:{job_id}"


def in_range(f: JobFilter, job: Job) -> bool:
    """Is the job's last change within ``f``'s since/until (the other filters: f.matches)?"""
    changed = job.changed_at or 0.0
    return (f.since is None or changed >= f.since) and (f.until is None or changed <= f.until)


def sorted_page(reader: Searching, f: JobFilter, sort: str, limit: int, before: str | None, within: str | None,
                budget: int, window: int = WINDOW) -> Page:
    """One page of the jobs of ``f`` in ``sort`` order (not "changed": Reader.search has
    that), from ``before`` on; where the store has no index of the sort, among the newest
    ``window`` (1 to :data:`WINDOW`) jobs by change. Raises ValueError for a bad sort,
    cursor, limit, budget or window."""
    sort = check_sort(sort)
    if limit < 1 or budget < 1:
        raise ValueError(f"limit and budget must be >= 1, got {limit} and {budget}")
    if not 1 <= window <= WINDOW:
        raise ValueError(f"window must be 1 to {WINDOW} jobs, got {window}")
    c = reader.client
    if within is None and c.call(c.store.sortable, sort, f.status):
        return _indexed(reader, f, sort, limit, parse_cursor(before), budget)
    return _windowed(reader, f, sort, limit, parse_cursor(before), within, window)


def _indexed(reader: Searching, f: JobFilter, sort: str, limit: int, before: tuple[float, str] | None,
             budget: int) -> Page:
    """From the store's index of ``sort`` (and ``f.status``); the rest of ``f`` checked on
    each job read, at most ``budget`` of them."""
    c = reader.client
    exact = f.indexed(frozenset({"status"})) and f.until is None
    out: list[tuple[float, Job]] = []
    scanned, last, done = 0, before, False
    while len(out) < limit and scanned < budget and not done:
        n = min(limit + 1 if exact else 200, budget - scanned)
        rows = c.call(c.store.list_sorted, sort, f.status, n, last)
        done = len(rows) < n
        for i, (value, job) in enumerate(rows):
            scanned += 1
            last = (value, job.id)
            if f.matches(job) and in_range(f, job):
                out.append((value, job))
                if len(out) == limit:
                    done = done and i == len(rows) - 1  # rows after this one are still to show
                    break
    more = not done and last is not None
    return Page([j for _, j in out], cursor(*last) if more and last is not None else None, None,
                None if exact else scanned, partial=more and len(out) < limit)


def _windowed(reader: Searching, f: JobFilter, sort: str, limit: int, before: tuple[float, str] | None,
              within: str | None, size: int) -> Page:
    """The jobs of ``f`` among the newest ``size`` by change (up to the change cursor
    ``within``: the window of the first page), ordered by ``sort``: as bounded as a search
    page."""
    top = parse_cursor(within)
    # the anchor job itself is in the window: "~" sorts after every id
    start = cursor(top[0], top[1] + "~") if top else None
    window = reader.search(f, limit=size, before=start, budget=size)
    jobs = window.jobs
    if top is None and jobs:
        within = cursor_of(jobs[0])
    keyed = sorted(((v, j) for j in jobs if (v := value_of(j, sort)) is not None),
                   key=lambda r: (round(r[0], 6), r[1].id), reverse=True)
    ordered = len(keyed)  # the jobs of the window with a value: the others are not listed
    if before is not None:
        keyed = [r for r in keyed if (round(r[0], 6), r[1].id) < (round(before[0], 6), before[1])]
    page = keyed[:limit]
    nxt = cursor(*_pair(page[-1])) if len(keyed) > limit and page else None
    return Page([j for _, j in page], nxt, None, window.scanned, window=ordered, within=within)


def _pair(row: tuple[float, Job]) -> tuple[float, str]:
    return row[0], row[1].id
