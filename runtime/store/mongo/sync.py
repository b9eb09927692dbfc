"""Keeping MongoDB in step with Redis: write order, fencing, and the reconcile sweep.

Design. Redis is the authority of live state: every status change is one Lua script that
changes the job hash, its queue and claim entries and appends one history entry
atomically, fenced by attempt number (unchanged by the MongoDB store). MongoDB is the
durable, queryable copy, written *after* Redis, always from what Redis holds:

- **enqueue**: Redis first (``enqueue.lua``), then the client inserts the new documents in
  MongoDB (version 1) within ``mongodb_producer_timeout_s``, handing over the ids it could
  not copy (runtime.store.mongo.pending: reads take them from Redis until the workers'
  copier writes them). Crash or MongoDB outage in between: the job is queued and runs
  (nothing lost); its document reaches MongoDB at its claim, its end, or the sweep.
  (MongoDB first would make a producer depend on two services, and a failed Redis write
  would leave a document that may or may not be queued.)
- **claim and completion** (worker): Redis first (``claim.lua`` / ``finish.lua``, one
  round trip), then the ids go to the worker's mirror (runtime.store.mongo.mirror),
  which reads their hashes (history included) in one MULTI (a consistent snapshot) and writes
  them with one unordered bulk write. Crash in between: the state is in Redis; the
  reaper requeues a dead worker's jobs, and the sweep copies what MongoDB lacks.
- **cancel, abort, requeue** (client): Redis first (``control.lua``), then the snapshot of
  the ids done. **reaper** changes (lost workers) are copied by a sweep of the last
  seconds right after the reap that made them.

Fencing. A document's ``version`` is its Redis history length (its count of history
entries, runtime.hashfields.history_length), which each status change
grows by one inside the same script, and a snapshot is read atomically; MongoDB replaces
a document only over a lower version (``MongoJobStore.write``). So a late, replayed or
reordered write never overwrites a newer status: a final status is replaced only by a
newer change, which Redis allows only through an explicit requeue.

Deployments. A collection belongs to one deployment (one Redis database and key prefix),
checked before first use (runtime.store.mongo.deployment): a second Redis with the same
prefix would take the other's waiting documents for jobs its Redis lost and queue them
again. Deployments that share a collection on purpose (``mongodb_shared = 1`` on each,
with different prefixes) are told apart by the ``prefix`` field of each document, which
then joins every filter: reads, counts, version look-ups and both sweep phases (phase 2
adopts only its own prefix's documents, so a deployment never runs another's jobs). The
write fence always names it. Alone in its collection, a deployment's queries need no
prefix, so the indexes do not lead with it and users' queries use them as written.

Recovery: :func:`reconcile`, the sweep (run by one worker's reaper every
``mongodb_sweep_interval_s``, after every reap that moved jobs, and by ``runtime mongo
reconcile``), repairs both windows:

1. Redis -> MongoDB: every job whose Redis status changed since the last sweep
   (``{p}:mongo:synced``, from the status indexes) and older than
   ``mongodb_sweep_lag_s`` is compared by version; those MongoDB lacks or has older are
   written from a snapshot. This covers a crash after any Redis write, a MongoDB outage
   (buffered ids lost with their worker), and the reaper's changes.
2. MongoDB -> Redis: documents MongoDB holds as waiting or started (older than the lag)
   whose Redis hash is gone (Redis lost its data) are queued again from the document
   (``adopt.lua``: history kept, so versions go on growing), at their due time (a delayed
   job or a retry stays delayed); at-least-once, as for a lost worker. (A job whose Redis
   document expired after its end but whose final status never reached MongoDB in all of
   ``ttl_s`` would run again; phase 1 closes that window within seconds.)

Phase 1 sees only what changed since its watermark: a MongoDB that lost its data (a
restore, a dropped collection) is refilled by ``runtime mongo reconcile --full``
(:meth:`MongoSync.reconcile_full`), which compares every job Redis still holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

from ...broker import RedisBroker
from ...broker.adoption import adopt
from ...broker.connection import texts
from ...hashfields import COUNT, LEGACY, encode_entry, history_length
from ...job import Job, dumps
from ...messages import NewJob
from ...status import REQUEUABLE, RUNNING, WAITING, Status
from .documents import document, job_from_document, to_date, to_seconds
from .pending import hand_over, pending_key
from .store import MongoJobStore

log = logging.getLogger("runtime.mongo")

#: Jobs per snapshot read and bulk write.
SYNC_BATCH = 500
#: Documents per insert of a producer's copy (a batch that lands counts even when a later
#: one runs out of the producer's time).
PRODUCER_BATCH = 200
#: Jobs compared per status index and per adoption query in one sweep.
SWEEP_LIMIT = 2000
_NOT_FINAL = sorted(s.value for s in (*WAITING, *RUNNING))
#: Fields a requeue clears (as control.lua's requeue does).
_CLEARED_BY_REQUEUE = ("result", "exc_type", "exc_message", "traceback", "reason", "ended_at", "started_at",
                       "worker", "progress", "progress_message", "overrun")


@dataclass
class SweepReport:
    """What one :func:`reconcile` did: jobs compared, written to MongoDB, queued again in Redis."""

    checked: int = 0
    written: int = 0
    adopted: int = 0
    more: bool = False  # a limit was reached: run again to go on


def hash_fields(job: Job) -> dict[str, str]:
    """The Redis hash of ``job`` (the inverse of Job.from_hash), without its history."""
    out: dict[str, str] = {}
    for f in fields(Job):
        value = getattr(job, f.name)
        if f.name == "history" or value is None or value == [] or value == {}:
            continue
        if isinstance(value, Status):
            out[f.name] = value.value
        elif isinstance(value, float):
            out[f.name] = f"{value:.6f}"
        elif isinstance(value, (dict, list)) or f.name == "result":
            out[f.name] = dumps(value)
        else:
            out[f.name] = str(value)
    return out


class MongoSync:
    """Copies job documents from Redis to the MongoDB store (and back after a Redis loss).

    Writes raise pymongo's errors when MongoDB is unreachable; callers decide to buffer
    (the worker) or leave the repair to the sweep (the client).
    """

    def __init__(self, broker: RedisBroker, store: MongoJobStore) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.redis = broker.redis
        self.keys = broker.keys
        self.store = store

    # ---- Redis -> MongoDB ---------------------------------------------------------------

    def snapshot(self, ids: Sequence[str]) -> list[tuple[Job, int]]:
        """(job, version) of each of ``ids`` Redis has, read atomically (MULTI); on a Redis
        Cluster, where a transaction takes keys of one hash slot only, each document is
        read atomically (its HGETALL) and the batch in one pipeline."""
        pipe = self.redis.pipeline(transaction=not self.broker.clustered)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        replies = pipe.execute() if ids else []
        out = []
        for job_id, data in zip(ids, replies):
            if not data or "status" not in data:
                continue  # gone from Redis (expired, or only progress written)
            try:
                out.append((Job.from_hash(data, job_id=job_id), history_length(data)))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("job %s: its Redis document cannot be read (%s); not copied to MongoDB", job_id, exc)
        return out

    def sync(self, ids: Sequence[str], copied: list[str] | None = None) -> int:
        """Copy the current Redis state of ``ids`` to MongoDB (fenced); returns docs written.
        ``copied`` gets the ids of each batch once it is written."""
        written = 0
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), SYNC_BATCH):
            snap = self.snapshot(unique[i:i + SYNC_BATCH])
            written += self.store.write([document(job, v, self.settings) for job, v in snap])[0]
            if copied is not None:
                copied += unique[i:i + SYNC_BATCH]
        return written

    def enqueued(self, jobs: Sequence[NewJob], server_time: float, copied: list[str] | None = None) -> None:
        """Insert the documents of jobs Redis just queued at ``server_time`` (version 1),
        PRODUCER_BATCH at a time; ``copied`` gets the ids of each batch once it is written."""
        for i in range(0, len(jobs), PRODUCER_BATCH):
            docs = []
            for j in jobs[i:i + PRODUCER_BATCH]:
                due = server_time + j.delay_s if j.delay_s > 0 else server_time
                job = Job(j.id, j.path, json.loads(j.params_json), j.queue, j.priority, Status.QUEUED,
                          queued_at=server_time, due_at=due, meta=dict(j.meta),
                          history=[{"at": server_time, "status": "queued"}])
                docs.append(document(job, 1, self.settings))
            self.store.write(docs, fresh=True)
            if copied is not None:
                copied += [d["_id"] for d in docs]

    def hand_over(self, ids: Sequence[str]) -> None:
        """Leave the copy of ``ids`` to the workers' copier (runtime.store.mongo.pending)."""
        hand_over(self.store.live, ids)

    def copy_pending(self) -> int:
        """Copy the jobs producers handed over (runtime.store.mongo.pending), SYNC_BATCH at
        a time until none is left; returns the documents written. Raises pymongo's and redis's errors
        (those not copied stay pending)."""
        key = pending_key(self.store.live)
        done = 0
        while True:
            ids = texts(cast("list[str]", self.redis.srandmember(key, SYNC_BATCH)))
            if not ids:
                return done
            done += self.sync(ids)
            self.redis.srem(key, *ids)

    def _server_time(self) -> float:
        sec, usec = self.redis.time()
        return float(sec) + usec / 1e6

    def _indexes(self) -> list[str]:
        """The status indexes of every queue ({p}:queues)."""
        return [self.keys.status(q, s.value) for q in self.broker.queue_names() for s in Status]

    def _changed_since(self, since: float, until: float, limit: int) -> tuple[list[str], float, bool]:
        """Ids whose Redis status changed in (since, until], oldest first, about ``limit`` of
        them (ties at the boundary all kept); returns (ids, new watermark, more left)."""
        indexes = self._indexes()
        pipe = self.redis.pipeline(transaction=False)
        for key in indexes:
            pipe.zrangebyscore(key, f"({since!r}", repr(until), start=0, num=limit, withscores=True)
        chunks = pipe.execute()
        full = [c[-1][1] for c in chunks if len(c) >= limit]
        if not full:
            return [m for c in chunks for m, _ in c], until, False
        boundary = min(full)
        ids = [m for c in chunks for m, score in c if score < boundary]
        for key in indexes:  # every tie at the boundary, however many
            pipe.zrangebyscore(key, repr(boundary), repr(boundary))
        ids += [m for c in pipe.execute() for m in c]
        return ids, boundary, True

    def _behind(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` whose MongoDB version is lower than their Redis history length."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.keys.job(job_id), COUNT, LEGACY)
        lengths = [history_length({COUNT: n or "", LEGACY: h or ""}) for n, h in (pipe.execute() if ids else [])]
        stored = self.store.versions(ids) if ids else {}
        return [i for i, n in zip(ids, lengths) if n and stored.get(i, 0) < n]

    # ---- MongoDB -> Redis ---------------------------------------------------------------

    def adopt(self, docs: Sequence[dict[str, Any]], note: str, fresh: bool = False) -> list[str]:
        """Queue again in Redis the jobs of these MongoDB documents that Redis lacks, each at
        its due time (a delayed job or a retry due later stays delayed); returns their
        ids. ``fresh``: as a requeue does, ready now, with no result or error and a new
        retry budget."""
        entries: list[tuple[str, str, int, str, str, str]] = []
        for doc in docs:
            try:
                job = job_from_document(doc)
            except Exception as exc:  # noqa: BLE001 - one unreadable document never stops the sweep
                log.error("job %s: its MongoDB document cannot be read (%s: %s); not queued again",
                          doc.get("_id"), type(exc).__name__, str(exc)[:300])
                continue
            if fresh:
                for name in _CLEARED_BY_REQUEUE:
                    setattr(job, name, None)
                job.retries = job.lost = 0
                job.logs, job.report, job.artifacts = [], {}, {}
                job.due_at = None
            history = [encode_entry(h) for h in job.history]
            version = int(doc.get("version", len(history)))
            filler = {"at": job.history[-1].get("at") if job.history else None, "status": "...",
                      "note": "history entry not kept"}
            history += [encode_entry(filler)] * max(0, version - len(history))
            flat = hash_fields(job)
            for k in ("status", "queue", "priority"):
                flat.pop(k, None)
            entries.append((job.id, job.queue, job.priority, dumps(flat), dumps(history), note))
        adopted = adopt(self.broker, entries)
        if adopted:
            self.sync(adopted)
        return adopted

    def requeue_from_history(self, ids: Sequence[str]) -> list[str]:
        """Requeue jobs that only MongoDB still has (their Redis copy expired) and that are
        final or interrupted there; returns the ids queued again."""
        requeuable = sorted(s.value for s in REQUEUABLE)
        docs = list(self.store.jobs.find(self.store.scope({"_id": {"$in": list(ids)}, "status": {"$in": requeuable}})))
        by_status: dict[str, list[dict[str, Any]]] = {}
        for d in docs:
            by_status.setdefault(d["status"], []).append(d)
        done: list[str] = []
        for status, group in by_status.items():
            done += self.adopt(group, f"requeued from {status} (restored from MongoDB: Redis no longer had it)",
                               fresh=True)
        return done

    # ---- the sweep ----------------------------------------------------------------------

    def reconcile(self, lag_s: float | None = None, limit: int = SWEEP_LIMIT) -> SweepReport:
        """One sweep of both directions (see the module docstring). Changes younger than
        ``lag_s`` (default ``mongodb_sweep_lag_s``) are left to their writers.

        Raises redis and pymongo errors when either cannot be reached (nothing advances)."""
        lag = self.settings.mongodb_sweep_lag_s if lag_s is None else lag_s
        report = SweepReport(written=self.copy_pending())
        now = self._server_time()
        cutoff = now - lag
        mark = self.keys.mongo("synced")
        since = float(self.redis.get(mark) or 0.0)
        if cutoff > since:
            ids, until, more = self._changed_since(since, cutoff, limit)
            report.checked += len(ids)
            behind = self._behind(ids)
            if behind:
                report.written += self.sync(behind)
                log.info("reconcile: %d job documents copied to MongoDB (of %d changed)", len(behind), len(ids))
            self.redis.set(mark, repr(until))
            report.more = more
        report.adopted = self._adopt_lost(cutoff, limit, report)
        return report

    def repair(self, lag_s: float = 0.0, full: bool = False) -> dict[str, int]:
        """Sweep until nothing is left (``runtime mongo reconcile``): with ``full``, first
        compare every job Redis holds (:meth:`reconcile_full`). Returns the totals:
        ``{"checked", "written", "adopted"}``."""
        self.store.check_owner()
        total = {"checked": 0, "written": 0, "adopted": 0}
        if full:
            report = self.reconcile_full()
            total["checked"], total["written"] = report.checked, report.written
        while True:
            report = self.reconcile(lag_s)
            for k in total:
                total[k] += getattr(report, k)
            if not report.more:
                return total

    def reconcile_full(self, batch: int = SYNC_BATCH) -> SweepReport:
        """Compare *every* job Redis holds (every status index, ``batch`` at a time) with
        MongoDB and copy those it lacks or has older, whatever the sweep's watermark says:
        refills a MongoDB that lost its data (``runtime mongo reconcile --full``). A job
        that changes status meanwhile may be seen twice or missed; its change is newer than
        the watermark, so the ordinary sweep copies it."""
        report = SweepReport()
        for key in self._indexes():
            start = 0
            while True:
                ids = texts(cast("list[str]", self.redis.zrange(key, start, start + batch - 1)))
                if not ids:
                    break
                start += len(ids)
                report.checked += len(ids)
                behind = self._behind(list(ids))
                if behind:
                    report.written += self.sync(behind)
                if len(ids) < batch:
                    break
        if report.written:
            log.info("reconcile --full: %d job documents copied to MongoDB (of %d in Redis)",
                     report.written, report.checked)
        return report

    def _adopt_lost(self, cutoff: float, limit: int, report: SweepReport) -> int:
        """Phase 2: waiting or started documents that Redis no longer has are queued again."""
        mark = self.keys.mongo("adopt_after")
        after = float(self.redis.get(mark) or 0.0)
        docs = list(self.store.jobs.find(
            self.store.scope({"status": {"$in": _NOT_FINAL},
                              "changed_at": {"$gt": to_date(after), "$lt": to_date(cutoff)}}),
            {"_id": 1, "changed_at": 1}).sort("changed_at", 1).limit(limit))
        report.checked += len(docs)
        if len(docs) >= limit:
            report.more = True
        self.redis.set(mark, repr(to_seconds(docs[-1]["changed_at"])) if len(docs) >= limit else "0")
        if not docs:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for d in docs:
            pipe.exists(self.keys.job(d["_id"]))
        lost = [d["_id"] for d, there in zip(docs, pipe.execute()) if not there]
        if not lost:
            return 0
        full = list(self.store.jobs.find(self.store.scope({"_id": {"$in": lost}, "status": {"$in": _NOT_FINAL}})))
        adopted = self.adopt(full, "queued again from MongoDB: Redis had lost the job")
        if adopted:
            log.warning("reconcile: %d jobs that Redis had lost were queued again from MongoDB", len(adopted))
        return len(adopted)

    def sweep_locked(self, owner: str, lag_s: float | None = None) -> SweepReport | None:
        """:meth:`reconcile` if no other process sweeps now (a Redis lock with a TTL);
        None when another holds it."""
        lock = self.keys.mongo("lock")
        ttl_ms = int(max(30.0, 3 * self.settings.mongodb_timeout_s) * 1000)
        if not self.redis.set(lock, owner, nx=True, px=ttl_ms):
            return None
        try:
            return self.reconcile(lag_s)
        finally:
            if self.redis.get(lock) == owner:
                self.redis.delete(lock)

