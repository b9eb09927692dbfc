"""Finding dead workers and taking their jobs back: one place for the worker's reaper and
the supervisor, over reap.lua.

A worker is dead when, on this host, its pid is gone (or is another process now, or a
zombie); on another host, when its registry entry expired (no heartbeat for
``worker_ttl_s``) and is still missing two heartbeat intervals later, as seen by this
reaper: an entry also vanishes when Redis restarts, and a live worker writes it again
within a heartbeat. So a worker that dies on any host is found within ``worker_ttl_s``
plus two heartbeats plus one reaper pass (8 s with the defaults). Its jobs
are then taken back at once: the ones it was running (or may have been) are marked to
run alone next time, so that only a job that kills workers again is charged again; the
ones its last heartbeat listed as prefetched are requeued without a charge.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any, Protocol

import gevent

from ..broker import RedisBroker
from ..broker.broker import Reaped
from ..broker.connection import REDIS_ERRORS, moved_master
from ..broker.lost import mark_lost
from ..broker.moves import GRACE_S, finish_moves
from ..process import alive, host_pid, hostname
from ..settings import Settings
from ..units import plural
from .link import RedisLink

log = logging.getLogger("runtime.worker")

#: What the reaper reports to the worker's RedisLink as doing.
REAPING = "taking back the jobs of dead workers"


class Reaper:
    """Takes back the jobs of dead workers on ``broker``'s Redis, seen from this host;
    ``own_id`` (the caller's registry id) is never taken for dead. ``claimant``: who it
    claims dead workers as (runtime.broker.registry.Registry.claim_lost; by default
    ``own_id``, or an id of its own without one)."""

    def __init__(self, broker: RedisBroker, own_id: str = "", link: RedisLink | None = None,
                 claimant: str = "") -> None:
        self.broker = broker
        self.link = link
        self.own_id = own_id
        self.claimant = claimant or own_id or f"reaper.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.host = hostname()
        self._missing: dict[str, float] = {}  # worker id -> when its entry was first seen missing
        #: when reap_for next looks for moves cut short (time.monotonic): a move is left to
        #: its mover for GRACE_S anyway, so a look every GRACE_S is as prompt as every pass
        self.next_moves_check = 0.0

    def dead(self) -> list[str]:
        """Ids of registered workers that are dead (see the module docstring)."""
        registry = self.broker.registry
        ids = sorted(w for w in registry.ids() if w != self.own_id)
        now = time.monotonic()
        grace = 2 * self.broker.settings.heartbeat_interval_s
        out = []
        for wid, (host, pid, started) in zip(ids, registry.fields(ids, "host", "pid", "pid_started")):
            if host is not None:  # its entry lives: it beat within worker_ttl_s
                self._missing.pop(wid, None)
                if host == self.host and pid is not None and not alive(int(pid), float(started) if started else None):
                    out.append(wid)  # a process of this host that is gone: dead at once
                continue
            host, pid_n = host_pid(wid)
            if host == self.host and pid_n is not None and alive(pid_n, None):
                continue  # ours and alive: its heartbeat is late (a Redis restart lost the entry)
            # no beat for worker_ttl_s: dead, once a live worker would have written its entry
            # again (after a Redis restart, it does within a heartbeat)
            if now - self._missing.setdefault(wid, now) >= grace or host == self.host:
                out.append(wid)
                self._missing.pop(wid, None)
        return out

    def take_back(self, worker_ids: list[str], why: str, unstarted: list[str] | None = None,
                  event: dict[str, Any] | None = None, supervisor: str | None = None) -> tuple[int, int]:
        """Requeue (or fail, worker-lost) the jobs of the dead ``worker_ids`` now, noting
        ``why``; ``unstarted`` (prefetched, known not to have run) are requeued without a
        charge (looked up from their last heartbeats when not given). Also takes back
        claims whose deadline passed. With ``event`` (its ``event`` kind, ``reason`` and any
        other keys of runtime.broker.registry.EVENT_KEYS) and ``unstarted`` not given,
        records the event, naming the jobs. Returns (requeued, failed) of the dead
        workers' jobs (:meth:`taken_back` says more). Raises redis.RedisError."""
        done = self.taken_back(worker_ids, why, unstarted, event, supervisor)
        return (done.dropped_requeued, done.dropped_failed) if worker_ids else (done.requeued, done.failed)

    def taken_back(self, worker_ids: list[str], why: str, unstarted: list[str] | None = None,
                   event: dict[str, Any] | None = None, supervisor: str | None = None) -> Reaped:
        """:meth:`take_back`, returning what the reap did (runtime.broker.broker.Reaped).
        Only the dead workers this reaper claims (Registry.claim_lost) are taken back
        here, and only their take-back records an event: another reaper, or the
        supervisor, that saw them dead at the same time does the rest; with none claimed,
        nothing is done (all zero)."""
        if worker_ids:
            worker_ids = self.broker.registry.claim_lost(worker_ids, self.claimant)
            if not worker_ids:
                return Reaped(0, 0, 0, 0)
        lost = None
        if worker_ids and unstarted is None:
            lost = mark_lost(self.broker, worker_ids, why)
            unstarted = lost.unstarted
        done = self.broker.reap(worker_ids, unstarted=unstarted or [])
        requeued, failed = done.dropped_requeued, done.dropped_failed
        if lost is not None and lost.paths and requeued + failed:
            self._say_lost(worker_ids[0], lost.paths, why)
        if event is not None and lost is not None:
            host, pid = host_pid(worker_ids[0])
            self.broker.registry.record_event({
                **event, "at": time.time(), "host": host, "pid": pid,
                "worker": worker_ids[0], "supervisor": supervisor, "detail": why,
                "running": [{"id": j, "path": p} for j, p in lost.paths.items()], "unstarted": lost.unstarted,
                "requeued": requeued, "failed": failed})
        return done

    def _say_lost(self, worker_id: str, paths: dict[str, str], why: str) -> None:
        """One worker log line per job its dead worker was running (fields as the worker's
        job lines: runtime.cli.logformat), and one Sentry event each where this process
        reports to Sentry: what became of it (queued again, or failed worker-lost)."""
        ids = list(paths)
        pipe = self.broker.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.broker.keys.job(job_id), "status", "queue", "attempt")
        rows = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in pipe.execute()]
        report = _sentry()
        for job_id, (status, queue, attempt) in zip(ids, rows):
            then = "queued again" if status == "queued" else f"{status} (worker-lost)"
            extra = {"job_id": job_id, "task": paths[job_id], "queue": queue, "status": status,
                     "attempt": int(attempt) if attempt and attempt.isdigit() else None, "worker_id": worker_id,
                     "error_type": "worker-lost"}
            log.warning("job %s %s lost: %s (worker %s); %s", job_id, paths[job_id], why, worker_id, then, extra=extra)
            if report is not None:
                report(f"job {job_id} ({paths[job_id]}) lost: {why}; {then}", job_id, paths[job_id], worker_id)

    def reap_once(self) -> tuple[int, int]:
        """Take back the jobs of every dead worker and every expired claim; returns
        (requeued, failed worker-lost). Raises redis.RedisError."""
        dead = self.broker.registry.claim_lost(self.dead(), self.claimant)  # the others are another's to take
        requeued, failed = self.take_back([], "") if not dead else (0, 0)  # expired claims only
        for wid in dead:  # one event each, by the reaper that claims it
            done = self.taken_back([wid], "its worker process died (it stopped heartbeating and its pid is gone)",
                                   event={"event": "lost", "reason": "worker-lost"})
            requeued, failed = requeued + done.requeued, failed + done.failed
        if dead or requeued or failed:
            log.warning("reaper: %d dead %s, %d %s requeued, %d failed (worker-lost)", len(dead),
                        plural(len(dead), "worker"), requeued, plural(requeued, "job"), failed)
        return requeued, failed

    def safely(self) -> tuple[int, int]:
        """:meth:`reap_once`, logging any error instead of raising it (the reaper's loop
        must outlive a bad registry entry, a client of the wrong kind, a Redis error)."""
        try:
            done = self.reap_once()
        except REDIS_ERRORS as exc:
            if self.link is None or not self.link.failed(exc, REAPING):
                log.warning("reaper: %s", exc)
            return 0, 0
        except Exception:  # noqa: BLE001
            log.exception("reaper pass failed; trying again in the next pass")
            return 0, 0
        if self.link is not None:
            self.link.ok(REAPING)
        return done


def _sentry() -> Any:
    """A function that sends a warning to Sentry about one lost job, where this process
    reports to Sentry (the Sentry middleware started its client), else None."""
    import sys
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None or not sdk.get_client().is_active():
        return None

    def report(message: str, job_id: str, path: str, worker_id: str) -> None:
        with sdk.isolation_scope() as scope:
            scope.set_tag("job_id", job_id)
            scope.set_tag("task", path)
            scope.set_tag("reason", "worker-lost")
            scope.set_context("job", {"id": job_id, "task": path, "worker": worker_id,
                                      "see": f"runtime job {job_id}"})
            scope.capture_message(message, level="warning")
    return report


class Reaping(Protocol):
    """What :func:`reap_for` and :func:`reap_loop` need of a worker."""

    id: str
    settings: Settings
    broker: RedisBroker
    reaper: Reaper
    mirror: Any
    link: RedisLink
    wakeup: Any
    starts: Any
    served: Any


def reap_for(worker: Reaping) -> None:
    """One pass of ``worker``'s reaper; its MongoDB mirror (if any) hears of the jobs
    taken back. Moves to another queue cut short by a mover that stopped between steps
    are ended (runtime.broker.moves.finish_moves, looked for every GRACE_S). Jobs parked under a cap its tasks no
    longer declare go back to their queues (runtime.caps.unpark_uncapped)."""
    from ..caps import unpark_uncapped
    requeued, failed = worker.reaper.safely()
    if worker.mirror is not None:
        worker.mirror.after_reap(worker.id, requeued + failed)
    if time.monotonic() >= worker.reaper.next_moves_check:
        worker.reaper.next_moves_check = time.monotonic() + GRACE_S
        try:
            finish_moves(worker.broker)
        except REDIS_ERRORS as exc:
            log.warning("could not look for moves to another queue cut short (%s); trying again later", exc)
    try:
        moved = unpark_uncapped(worker.broker.redis, worker.broker.keys, worker.served.tasks)
    except REDIS_ERRORS as exc:
        log.warning("could not look for jobs parked under removed caps (%s); trying again later", exc)
        return
    if moved:
        log.info("%d %s parked under caps these tasks no longer declare put back in their queues",
                 len(moved), plural(len(moved), "job"))


def reap_loop(worker: Reaping) -> None:
    """:func:`reap_for` every ``reap_interval_s``, for good (a greenlet of the worker); and,
    on Sentinel, follow a master that moved (runtime.broker.connection.moved_master): the
    claims the worker holds on the new master but does not know of (their outcomes went to
    the old one) are released, as after a lost connection."""
    while True:
        reap_for(worker)
        moved = moved_master(worker.broker.redis)
        if moved is not None:
            log.warning("Sentinel names a new master, %s (was %s): following it", moved[1], moved[0])
            moved_master(worker.wakeup.client)
            worker.starts.close()  # its next records go to the new master
            worker.link.outages += 1  # runtime.broker.RedisBroker.release_unknown at the next claim
        gevent.sleep(worker.settings.reap_interval_s)
