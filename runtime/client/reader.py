"""The read API: every question the CLI asks (and any other reader: a web UI), in one place.

Jobs come from the job store (Redis, or MongoDB's history), live state from Redis: queue
depths, the registry of workers and supervisors, and recycle and kill events. Times in
the dicts returned here are ISO-8601 UTC strings; sizes are bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..job import Job, exc_name, iso, queue_of
from ..status import CLAIMED, Status
from .limits import check_queue
from .paging import Page, cursor_of, parse_cursor
from .parts import Calls
from .search import FAILED_STATUSES, Group, JobFilter, group_failures
from .sorting import WINDOW, sorted_page

#: Documents the first round trip of a search reads (the next one reads the rest of its budget).
_CHUNK = 200

#: Registry fields that hold numbers.
_INT_FIELDS = ("pid", "greenlets", "jobs_done", "rss_bytes", "processes", "restarts", "kills",
               "mem_limit_bytes", "mem_hard_limit_bytes")


@dataclass
class Attempt:
    """One run of a job, from its history: its number, worker, when it started (UNIX s;
    when it was claimed until its outcome is recorded, or when it never ran), and how it
    ended (status, time, note), or status ``started`` while it runs."""

    number: int
    worker: str | None
    started_at: float
    status: str = Status.STARTED.value
    ended_at: float | None = None
    note: str | None = None
    #: ``Type: message`` of an attempt that raised (the first 200 characters: the job keeps
    #: the last attempt's whole message and traceback), and its trace id
    error: str | None = None
    trace_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, times as ISO-8601 UTC."""
        return {"number": self.number, "worker": self.worker, "started_at": iso(self.started_at),
                "status": self.status, "ended_at": iso(self.ended_at), "note": self.note, "error": self.error,
                "trace_id": self.trace_id}


@dataclass
class JobView:
    """A job with its attempts (oldest first)."""

    job: Job
    attempts: list[Attempt] = field(default_factory=list)
    #: the cap a queued job is parked under (out of its queue until the cap has room)
    parked_cap: str | None = None


def attempts_of(job: Job) -> list[Attempt]:
    """The attempts of ``job``, read from its status history: each begins at its
    ``claimed`` entry (a worker took it), starts at its ``started`` entry (it began running;
    none for a job claimed and never run) and ends at the next entry. A history written
    before claims had their own entry has ``started`` alone: it begins the attempt."""
    out: list[Attempt] = []
    for h in job.history:
        status, at = h.get("status"), float(h.get("at") or 0.0)
        number = int(h.get("attempt") or len(out) + 1)
        if status == CLAIMED or (status == Status.STARTED.value and not (out and out[-1].number == number
                                                                         and out[-1].ended_at is None)):
            out.append(Attempt(number, h.get("worker"), at))
        elif status == Status.STARTED.value:
            out[-1].started_at = at
        elif out and out[-1].ended_at is None and status is not None:
            a = out[-1]
            a.status, a.ended_at, a.note = status, h.get("at"), h.get("note")
            a.error, a.trace_id = h.get("error"), h.get("trace_id")
    return out


#: The keys of every registry entry :func:`worker_entry` returns, workers and supervisors
#: alike (a key that does not apply to the kind, or is unknown, is None).
WORKER_KEYS = ("id", "kind", "supervisor", "host", "pid", "state", "queues", "greenlets", "processes",
               "running", "jobs_done", "rss_bytes", "mem_limit_bytes", "mem_hard_limit_bytes",
               "started_at", "heartbeat_at", "recycle", "children", "restarts", "kills", "caps", "rss_history")


def worker_entry(e: dict[str, str]) -> dict[str, Any]:
    """A raw registry entry in the one shape of :data:`WORKER_KEYS`: ``kind`` "worker" or
    "supervisor", numbers as numbers, ``queues``, ``running`` and ``children`` as lists,
    times as ISO-8601 UTC, None for what is missing or does not apply."""
    out: dict[str, Any] = dict.fromkeys(WORKER_KEYS)
    out.update({k: v for k, v in e.items() if k in out and v != ""})
    out["kind"] = e.get("kind") or "worker"
    out["queues"] = [q for q in (e.get("queues") or "").split(",") if q]
    out["running"] = json.loads(e.get("running") or "[]")
    out["rss_history"] = json.loads(e.get("rss_history") or "[]")  # [[UNIX s, bytes], ...], oldest first
    if e.get("children"):
        out["children"] = json.loads(e["children"])
    if e.get("caps"):  # the caps a worker enforces (runtime.caps.caps_listing)
        out["caps"] = json.loads(e["caps"])
    for k in _INT_FIELDS:
        if out.get(k) is not None:
            out[k] = int(out[k])
    for k in ("started_at", "heartbeat_at"):
        if out.get(k):
            out[k] = iso(float(out[k]))
    for r in out["running"]:
        r["started_at"] = iso(r.get("started_at"))
    return out


class Reader:
    """Read-only questions over one client's parts. Raises BrokerUnavailable or
    StoreUnavailable like the client."""

    def __init__(self, client: Calls) -> None:
        self.client = client

    def jobs(self, status: str | None = None, queue: str | None = None, path: str | None = None,
             limit: int = 20, before: str | None = None, count: bool = True) -> Page:
        """Up to ``limit`` (>= 1) jobs matching every filter, newest change first, from the
        cursor ``before`` (a page's ``next``) on; ``count``: their total too (a MongoDB
        count reads its whole status index). Raises ValueError for an unknown status, a
        bad cursor or limit; InvalidParams for a bad queue name (none could hold a job)."""
        if status is not None:
            Status(status)
        check_queue(queue, none=True)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        c = self.client
        found = c.call(c.store.list_jobs, status=status, queue=queue, path=path, limit=limit + 1,
                        before=parse_cursor(before))
        page = found[:limit]
        total = None
        if count and queue is None and path is None:
            counts = c.call(c.store.counts)
            total = counts[status] if status else sum(counts.values())
        return Page(page, cursor_of(page[-1]) if len(found) > limit and page else None, total)

    def states(self, ids: list[str]) -> list[dict[str, Any]]:
        """``{"id", "status", "progress" (0..1 or None)}`` of each of ``ids`` still stored
        (one round trip, no history): what a list of jobs updates live."""
        c = self.client
        found = c.call(c.store.get_many, ids, history=False)
        return [{"id": j.id, "status": j.status.value, "progress": j.progress} for j in found if j is not None]

    def live_job(self, job_id: str) -> Job:
        """The job without its history, from Redis while it is there (one HGETALL), else
        from the store: what a live poll of a job's page reads. Raises JobNotFound."""
        c = self.client
        [job] = c.call(c.store.live.get_many, [job_id], history=False)
        return job if job is not None else c.get_job(job_id)

    def stack(self, worker_id: str, job_id: str) -> list[str]:
        """The stack of ``job_id`` as the heartbeat of ``worker_id`` last reported it
        (innermost first; [] when that worker is gone or does not run it): one HMGET of
        the worker's ``running`` field, not its whole entry."""
        c = self.client
        [[running]] = c.call(c.broker.registry.fields, [worker_id], "running")
        for r in json.loads(running or "[]"):
            if r.get("id") == job_id:
                return [str(s) for s in r.get("stack") or []]
        return []

    def job(self, job_id: str) -> JobView:
        """One job with its history and attempts. Raises JobNotFound."""
        from ..caps import parked_cap
        c = self.client
        job = c.get_job(job_id)
        parked = (c.call(parked_cap, c.redis, c.broker.keys, job.id, job.path, job.queue)
                  if job.status == Status.QUEUED else None)
        return JobView(job, attempts_of(job), parked)

    def queues(self, live_counts: bool = False) -> dict[str, Any]:
        """``{"queues": {name: {"ready": n, "delayed": n, "paused": bool, "oldest_due_at": UNIX
        s or None (:meth:`heads`)}}, "counts": {status: n}, "caps": {cap name: {"running": n,
        "parked": n, "recent_starts": n}}}`` (runtime.caps); ``live_counts``: the counts of
        the jobs Redis holds (O(1) each), not the store's (MongoDB: a count of its history)."""
        from ..caps import cap_counts
        c = self.client
        depths: dict[str, dict[str, Any]] = dict(c.call(c.broker.registry.queue_depths))
        paused = c.call(c.broker.registry.paused)
        heads = self.heads(list(depths))
        for name, depth in depths.items():
            depth["paused"] = name in paused
            depth["oldest_due_at"] = heads.get(name)
        counts = c.call((c.store.live if live_counts else c.store).counts)  # live: the Redis ZCARDs
        return {"queues": depths, "counts": counts, "caps": c.call(cap_counts, c.redis, c.broker.keys)}

    def heads(self, queues: list[str]) -> dict[str, float]:
        """When the job at the head of each ready queue became due (UNIX s; queues with no
        ready job left out): one ZRANGE 0 0 each, in one round trip. The head is the
        oldest waiting job of the queue's highest priority (the score is -priority * 1e13
        + due ms, runtime.broker.keys), so with one priority it is the oldest of all."""
        c = self.client
        pipe = c.redis.pipeline(transaction=False)
        for q in queues:
            pipe.zrange(c.broker.keys.ready(q), 0, 0, withscores=True)
        replies = c.call(pipe.execute) if queues else []
        return {q: (float(reply[0][1]) % 1e13) / 1000 for q, reply in zip(queues, replies) if reply}

    def workers(self) -> list[dict[str, Any]]:
        """Live workers and supervisors (:func:`worker_entry`), each supervisor followed by
        the worker processes it runs (``supervisor`` names it), then unsupervised workers;
        ``scheduler_synced_at``: when a worker's scheduler last synced (server s), or None
        for a worker that runs none."""
        c = self.client
        entries = [worker_entry(e) for e in c.call(c.broker.registry.entries)]
        sups = {e["id"] for e in entries if e.get("kind") == "supervisor"}
        pairs: Any = c.call(c.redis.zrange, c.broker.keys.schedulers, 0, -1, withscores=True)
        synced = dict(pairs)
        for e in entries:  # when its scheduler last synced (runtime.scheduler.loop), or None
            e["scheduler_synced_at"] = synced.get(e["id"])

        def order(e: dict[str, Any]) -> tuple[str, bool, str]:
            wid, sup = str(e["id"]), str(e.get("supervisor") or "")
            tree = sup if sup in sups else wid if wid in sups else "~" + wid
            return tree, e.get("kind") != "supervisor", wid
        return sorted(entries, key=order)

    def holder(self, job_id: str, unique_key: str | None = None) -> dict[str, Any]:
        """Job ``job_id``, found holding its id or ``unique_key`` by an enqueue that queued
        nothing (Client.queue_once): ``{"id", "status" (None: its document is gone),
        "ended_at" (UNIX s or None), "frees_in_s"}``, the seconds until an enqueue with the
        same id or key queues a job again (None: not before the job ends and its document
        expires after its ``ttl_s``). One round trip."""
        c = self.client
        pipe = c.redis.pipeline(transaction=False)
        pipe.hmget(c.broker.keys.job(job_id), "status", "ended_at")
        pipe.pttl(c.broker.keys.job(job_id))
        if unique_key:
            pipe.pttl(c.broker.keys.unique(queue_of(job_id) or "", unique_key))  # of the holder's queue
        got = c.call(pipe.execute)
        (status, ended), doc_ms = got[0], int(got[1])
        frees: float | None = doc_ms / 1000 if doc_ms >= 0 else None
        if unique_key:  # held while the key lives and the job exists
            key_ms = int(got[2])
            frees = 0.0 if key_ms < 0 else min(key_ms / 1000, frees if frees is not None else key_ms / 1000)
        return {"id": job_id, "status": status, "ended_at": float(ended) if ended else None, "frees_in_s": frees}

    def unheard(self) -> list[str]:
        """Ids still registered whose entry expired: their process stopped heartbeating
        (dead, or cut off from Redis) and no reaper has taken their jobs back yet."""
        c = self.client
        ids = sorted(c.call(c.broker.registry.ids))
        found = c.call(c.broker.registry.fields, ids, "id")
        return [i for i, (got,) in zip(ids, found) if got is None]

    def server(self) -> dict[str, Any]:
        """The Redis server: ``{"url": masked URL, "version": "7.2.4", "role": "master",
        "used_memory_bytes": n, "maxmemory_bytes": n (0 = no limit), "maxmemory_policy":
        str, "uptime_s": n}``; on a Redis Cluster, role ``"cluster of N masters"`` and their
        memory summed (maxmemory 0 when one has no limit), the rest one master's."""
        from ..broker.connection import masters_info, where
        c = self.client
        info = c.call(masters_info, c.redis) if c.broker.clustered else c.call(c.redis.info)
        return {"url": where(c.redis), "version": info.get("redis_version"), "role": info.get("role"),
                "used_memory_bytes": info.get("used_memory"), "maxmemory_bytes": info.get("maxmemory"),
                "maxmemory_policy": info.get("maxmemory_policy"), "uptime_s": info.get("uptime_in_seconds")}

    def events(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` recycle and kill events, newest first (``at`` as ISO-8601)."""
        c = self.client
        found = c.call(c.broker.registry.events, limit)
        for e in found:
            e["at"] = iso(e.get("at"))
        return found

    def search(self, f: JobFilter, limit: int = 20, before: str | None = None, budget: int = 1000,
               sort: str = "changed", within: str | None = None, count: bool = True, window: int = WINDOW) -> Page:
        """Up to ``limit`` jobs passing ``f``, newest change first, from the cursor ``before``
        on. Filters the store indexes (status; and queue, path in MongoDB) are answered by
        :meth:`jobs`; the others are checked on each document read, at most ``budget`` of them: a page
        that ran out of budget is ``partial`` and its ``next`` goes on from where it
        stopped. ``sort``: another order, largest first (queued, started, ended, run:
        runtime.client.sorting; ``within``: the window cursor its pages carry; ``window``:
        how many of the newest jobs a sort the store has no index of orders). Raises
        ValueError for a bad cursor, limit, budget, sort or window."""
        if sort != "changed":
            return sorted_page(self, f, sort, limit, before, within, budget, window)
        indexes = getattr(self.client.store, "indexed", frozenset({"status"}))
        if f.indexed(indexes) and f.until is None:
            return self.jobs(f.status, f.queue, f.path, limit, before, count)
        if limit < 1 or budget < 1:
            raise ValueError(f"limit and budget must be >= 1, got {limit} and {budget}")
        cursor = parse_cursor(before)
        if f.until is not None and (cursor is None or cursor[0] > f.until):
            cursor = (f.until, "~")  # "~" sorts after every id: the jobs of time ``until`` are kept
        out: list[Job] = []
        scanned, last, done = 0, None, False
        while len(out) < limit and scanned < budget and not done:
            # a first chunk fills most pages; a rare match takes the rest of the budget at once
            n = min(_CHUNK, budget) if scanned == 0 else budget - scanned
            chunk = self._chunk(f, indexes, n, cursor)
            done = len(chunk) < n
            for i, job in enumerate(chunk):
                scanned += 1
                last = job
                if f.since is not None and (job.changed_at or 0.0) < f.since:
                    done = True
                    break
                if f.matches(job):
                    out.append(job)
                    if len(out) == limit:
                        done = done and i == len(chunk) - 1  # the chunk's rest is still to show
                        break
            if last is not None:
                cursor = parse_cursor(cursor_of(last))
        more = not done and last is not None
        return Page(out, cursor_of(last) if more and last is not None else None, None, scanned,
                    partial=more and len(out) < limit)

    def _chunk(self, f: JobFilter, indexes: frozenset[str], n: int, cursor: tuple[float, str] | None) -> list[Job]:
        """The next ``n`` jobs by the filters the store indexes (the others: f.matches)."""
        c = self.client
        def by(name: str) -> str | None:
            return getattr(f, name) if name in indexes else None
        more: dict[str, Any] = {}
        if f.exc_type is not None and "exc" in indexes:
            # by its class name (MongoDB's exc_changed), alone or with the path and status of
            # a failure group (exc_path_status_changed); f.matches checks the rest
            group = f.status is not None and f.path is not None
            more["exc_name"] = exc_name(f.exc_type)
            return c.call(c.store.list_jobs, status=f.status if group else None, path=f.path if group else None,
                          limit=n, before=cursor, **more)
        if f.worker is not None and "worker" in indexes and not (f.status or f.queue or f.path):
            more["worker"] = f.worker  # its own index (MongoDB's worker_changed), alone
        return c.call(c.store.list_jobs, status=by("status"), queue=by("queue"), path=by("path"), limit=n,
                      before=cursor, **more)

    def matching_ids(self, f: JobFilter, cap: int = 100_000) -> list[str]:
        """The ids of every job passing ``f`` (at most ``cap``), newest change first: what a
        bulk action by filter touches, taken before it acts."""
        return [i for i, _ in self.matching(f, cap)]

    def matching(self, f: JobFilter, cap: int = 100_000) -> list[tuple[str, str]]:
        """``(id, status)`` of every job passing ``f`` (at most ``cap``), newest change
        first: what a bulk action's dry run counts, by status."""
        found: list[tuple[str, str]] = []
        before: str | None = None
        while len(found) < cap:
            page = self.search(f, limit=min(1000, cap - len(found)), before=before, budget=10_000)
            found += [(j.id, j.status.value) for j in page.jobs]
            if page.next is None:
                break
            before = page.next
        return found

    def failures(self, budget: int = 1000, by_worker: bool = False, queue: str | None = None
                 ) -> tuple[list[Group], int]:
        """Failed jobs (failed, maxretries, timeout) grouped by exception type and task path
        (and worker: ``by_worker``; of ``queue`` only) among the newest ``budget`` of them
        (one listing over their status indexes, merged): (groups, how many documents were
        read). Counts hold within what was read."""
        c = self.client
        indexed = queue is not None and "queue" in getattr(c.store, "indexed", ())
        jobs: list[Job] = c.call(c.store.list_jobs, queue=queue if indexed else None, limit=budget,
                                 statuses=FAILED_STATUSES)
        read = len(jobs)
        if queue is not None and not indexed:
            jobs = [j for j in jobs if j.queue == queue]
        return group_failures(jobs, by_worker), read

    def rates(self, hours: float = 3.0, bucket_s: float = 600.0) -> list[dict[str, Any]]:
        """Jobs ended per bucket of ``bucket_s`` seconds over the last ``hours``, oldest
        first: ``{"at": ISO-8601 start, "success": n, "failed": n, "per_minute": x,
        "failure_rate": 0..1 or None}``, counted on the status indexes (one ZCOUNT per
        bucket and status: O(log n) each; a job counts where its current status began)."""
        c = self.client
        keys = c.store.live.keys
        now = time.time()
        starts = [now - hours * 3600 + i * bucket_s for i in range(int(hours * 3600 / bucket_s))]
        bad = FAILED_STATUSES
        queues = c.call(c.store.live.queue_names)
        statuses = (Status.SUCCESS.value, *bad)
        pipe = c.redis.pipeline(transaction=False)
        for t in starts:
            for status in statuses:
                for q in queues:
                    pipe.zcount(keys.status(q, status), t, f"({t + bucket_s}")
        replies = c.call(pipe.execute) if queues else []
        nq = len(queues)
        counts = [sum(int(n) for n in replies[i * nq:(i + 1) * nq]) for i in range(len(starts) * len(statuses))]
        out = []
        for i, t in enumerate(starts):
            row = counts[i * (1 + len(bad)):(i + 1) * (1 + len(bad))]
            ok, failed = int(row[0]), sum(int(n) for n in row[1:])
            out.append({"at": iso(t), "success": ok, "failed": failed, "per_minute": (ok + failed) * 60 / bucket_s,
                        "failure_rate": failed / (ok + failed) if ok + failed else None})
        return out
