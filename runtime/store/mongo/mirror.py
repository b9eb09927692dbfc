"""The worker's side of the MongoDB job store: copy what changed, pause when MongoDB is down.

A :class:`Mirror` belongs to one worker (``Worker.mirror``, None without a MongoDB URL).
The worker hands it the ids of the jobs it claimed and of the outcomes Redis recorded
(:meth:`Mirror.changed`); a greenlet copies them to MongoDB, batched (one MULTI snapshot
read from Redis and one unordered bulk write per wake-up, so a busy worker writes many
jobs per round trip, as its Redis side does). Write order and fencing: runtime.store.mongo.sync.

A MongoDB slower than the worker: past MAX_BACKLOG buffered ids the worker stops
claiming until half are copied (back-pressure, so MongoDB's lag stays bounded).

MongoDB unreachable: the ids stay buffered (Redis already holds every status, so the
buffer is ids only), :attr:`Mirror.healthy` turns False, the worker stops claiming and
shows ``state = degraded`` in its registry entry (``runtime workers``) and its log, and
the running jobs go on and are recorded in Redis. The greenlet retries with backoff; when
a write succeeds the buffer drains and the worker claims again, after creating again
the indexes MongoDB lost, if it did (a server restarted without its data). A ``--burst``
worker exits instead (code 4) once nothing it claimed is running: the ready and delayed
jobs stay queued in Redis (:meth:`Mirror.burst_may_end`). Nothing is lost: were the
worker to die meanwhile, its buffered ids are found again by the sweep.

Ownership: every ``mongodb_sweep_interval_s`` the worker records in the collection's
deployment marker that it is alive (runtime.store.mongo.deployment: ``runtime mongo
attach`` is refused meanwhile). Should the marker name another deployment (attached
elsewhere with ``--force``), the worker stops writing to MongoDB and claiming at once,
says so in one line, and stops (exit code 2): another Redis now queues those jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.event

from ...backoff import Backoff
from ...broker import RedisBroker
from ...broker.connection import REDIS_ERRORS
from ...errors import ConfigError, ExitCode
from ..base import JobStore
from .connection import short_error, translate, unreachable_errors, unreachable_reason, unreachable_why
from .store import MongoJobStore
from .sync import SYNC_BATCH, MongoSync

log = logging.getLogger("runtime.mongo")

#: Longest wait between two attempts to reach MongoDB again, seconds.
MAX_BACKOFF_S = 2.0
#: How often the worker looks at pymongo's view of the servers (no I/O), seconds.
WATCH_S = 0.25
#: Ids buffered at most before the worker stops claiming until half are copied: a MongoDB
#: slower than the worker slows the worker instead of falling ever further behind.
MAX_BACKLOG = 5000


class Mirror:
    """Copies one worker's job changes to MongoDB; see the module docstring."""

    def __init__(self, broker: RedisBroker, store: MongoJobStore) -> None:
        self.settings = broker.settings
        self.sync = MongoSync(broker, store)
        self.store = store
        #: ids to copy, in order, each once -> the number of the change that queued it last
        self.pending: dict[str, int] = {}
        self._changes = 0
        self.healthy = True
        #: a --burst worker ended while MongoDB was unreachable, documents left to the sweep
        self.left_behind = False
        #: the collection was attached to another deployment: nothing is written any more
        self.lost = False
        self.worker_id = ""
        self._on_lost: Callable[[], None] | None = None
        self._next_touch = 0.0
        self._toucher: Any = None
        self._unreachable = unreachable_errors()
        self._wake = gevent.event.Event()
        self._up = gevent.event.Event()  # set while the worker may claim
        self._up.set()
        self._greenlet: Any = None
        self._sweeper: Any = None
        self._watcher: Any = None
        self._next_sweep = 0.0

    # ---- life cycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Before the worker claims anything: check that the collection is this
        deployment's, create the indexes, and record this worker as alive. Raises
        ConfigError (another deployment's collection, refused credentials: CLI exit code
        2) or StoreUnavailable (MongoDB unreachable: exit code 4), with one short line."""
        try:
            self.store.check_owner()
            self.store.ensure_indexes()
            taken = self.store.touch(self.worker_id)
        except Exception as exc:
            mapped = translate(exc, self.settings.mongodb_url)
            if mapped is None:
                raise
            raise mapped from None
        if taken is not None:
            raise ConfigError(f"{self.store.jobs.full_name} was just attached to the Redis at {taken.get('redis')}")
        self._next_touch = time.monotonic() + self.settings.mongodb_sweep_interval_s

    def start(self, worker_id: str = "", on_down: Callable[[], None] | None = None,
              on_lost: Callable[[], None] | None = None) -> None:
        """:meth:`open` (recording ``worker_id`` as alive), then start copying, and watching
        pymongo's view of the servers every WATCH_S: an outage stops the claims at once,
        before a write has to time out. ``on_down``: called then (the worker leaves the
        idle lists: no job is handed to it); ``on_lost``: called once the collection was
        attached to another deployment (the worker stops). Raises what :meth:`open` raises."""
        self.worker_id, self._on_lost = worker_id, on_lost
        self.open()
        self._greenlet = gevent.spawn(self._loop)
        self._watcher = gevent.spawn(self._watch, on_down)

    def _watch(self, on_down: Callable[[], None] | None) -> None:
        while not self.lost:
            gevent.sleep(WATCH_S)
            why = unreachable_why(self.store.client)
            if why is not None and self.healthy:
                self._down(why)
                if on_down is not None:
                    on_down()
            elif why is None and not self.healthy:
                self._wake.set()  # a server answers again: try the buffered copies now
            elif self.healthy and time.monotonic() >= self._next_touch and (
                    self._toucher is None or self._toucher.dead):
                self._next_touch = time.monotonic() + self.settings.mongodb_sweep_interval_s
                self._toucher = gevent.spawn(self._touch)

    def _touch(self) -> None:
        """Say this worker is alive in the deployment marker; stop all if it names another."""
        try:
            taken = self.store.touch(self.worker_id)
        except self._unreachable as exc:
            self._down(exc)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. Redis away: not alive as far as others can tell
            log.debug("could not record this worker as alive in the deployment marker: %s", short_error(exc))
            return
        if taken is not None and not self.lost:
            self.lost = True
            self.pending.clear()
            self._up.clear()
            log.error("%s no longer belongs to this deployment: `runtime mongo attach` gave it to the Redis at %s; "
                      "not claiming nor writing to MongoDB any more: the worker stops (exit code 2)",
                      self.store.jobs.full_name, taken.get("redis"))
            if self._on_lost is not None:
                self._on_lost()

    @property
    def exit_code(self) -> int | None:
        """The worker's exit code when the job store ended it: 2 (USAGE) when the collection
        was attached elsewhere, 4 (UNAVAILABLE) when a --burst worker ended with MongoDB
        unreachable; None otherwise."""
        return ExitCode.USAGE if self.lost else ExitCode.UNAVAILABLE if self.left_behind else None

    def stop(self, timeout_s: float) -> None:
        """Copy what is buffered (for up to ``timeout_s``), then stop."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self.pending and self.healthy and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for g in (self._greenlet, self._sweeper, self._watcher, self._toucher):
            if g is not None:
                g.kill()
        if self.lost:  # another deployment's collection now: nothing more is written
            return
        try:
            self.sync.sync(list(self.pending))
            self.pending.clear()
            self.sync.reconcile(lag_s=0.0)  # and what our deregistration requeued
        except Exception as exc:  # noqa: BLE001 - MongoDB or Redis down at exit
            left = list(self.pending)
            try:  # reads take them from Redis until a worker's copier (or reconcile) copies them
                self.sync.hand_over(left)
                then = "handed over: reads take them from Redis until the next worker copies them"
            except REDIS_ERRORS as lost:
                then = f"the reconcile sweep will ({short_error(lost)})"
            log.warning("%d job documents not copied to MongoDB at exit (%s); %s", len(left), short_error(exc), then)

    # ---- what the worker calls ----------------------------------------------------------

    def changed(self, ids: Iterable[str]) -> None:
        """Queue ``ids`` (whose Redis documents changed) for copying."""
        if self.lost:
            return
        self._changes += 1
        for job_id in ids:
            self.pending[job_id] = self._changes
        if len(self.pending) >= MAX_BACKLOG:
            self._up.clear()
        self._wake.set()

    @property
    def claim_allowed(self) -> bool:
        """False while MongoDB is unreachable or the backlog is full: claim nothing."""
        return bool(self._up.is_set())

    def wait_healthy(self, timeout_s: float) -> bool:
        """Block (this greenlet) until claiming is allowed again or ``timeout_s`` passes."""
        return bool(self._up.wait(timeout_s))

    def burst_may_end(self, running: bool, queues: Sequence[str]) -> bool:
        """For ``worker --burst`` while MongoDB is unreachable: True (and says so, with how
        many jobs of ``queues`` are left queued in Redis) once the worker runs nothing
        (``running`` False), so that it exits (code 4) instead of waiting for MongoDB: the
        ready and delayed jobs wait safely in Redis, its buffered documents are handed
        over (runtime.store.mongo.pending) when it stops."""
        if self.healthy or self.lost or running:
            return False
        try:
            depths = self.sync.broker.registry.queue_depths(queues)
            left = f"{sum(n for d in depths.values() for n in d.values())} jobs left queued in Redis"
        except REDIS_ERRORS as exc:
            left = f"jobs left queued in Redis not counted ({exc})"
        log.warning("MongoDB unreachable and nothing running: --burst ends (exit code 4); %s for a worker once "
                    "MongoDB is back; %d job documents not copied, left to the next worker's copier "
                    "(`runtime mongo reconcile` copies them at once)", left, len(self.pending))
        self.left_behind = True
        return True

    def progress(self, job_id: str, fields: dict[str, str]) -> None:
        """Write a running job's progress, in a greenlet of its own so that the job does not
        wait for MongoDB (skipped while MongoDB is down: the final copy has it)."""
        if self.healthy and not self.lost:
            gevent.spawn(self._progress, job_id, fields)

    def _progress(self, job_id: str, fields: dict[str, str]) -> None:
        try:
            self.store.set_progress(job_id, fields)
        except self._unreachable as exc:
            self._down(exc)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.warning("progress of job %s not written to MongoDB: %s", job_id, short_error(exc))

    def after_reap(self, owner: str, moved: int) -> None:
        """After a reap: copy the jobs producers handed over (runtime.store.mongo.pending)
        and those the reap moved (``moved`` > 0) now, and run the periodic sweep when due
        (one worker at a time), in a greenlet of its own so that a slow sweep never delays
        the reaper. Logs errors in one line, raises none."""
        if self.healthy and not self.lost and (self._sweeper is None or self._sweeper.dead):
            self._sweeper = gevent.spawn(self._sweep, owner, moved)

    def _sweep(self, owner: str, moved: int) -> None:
        try:
            self.sync.copy_pending()
            if moved:
                self.sync.reconcile(lag_s=0.0)
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + self.settings.mongodb_sweep_interval_s
                self.sync.sweep_locked(owner)
        except self._unreachable as exc:
            self._down(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. Redis away, MongoDB refusing: the next sweep retries
            log.warning("reconcile sweep failed (%s: %s); it runs again in %.0f s", type(exc).__name__,
                        short_error(exc), self.settings.reap_interval_s)

    # ---- the copying greenlet -----------------------------------------------------------

    def _down(self, exc: BaseException | str) -> None:
        if self.healthy:
            why = unreachable_reason(exc, self.settings.mongodb_url)
            log.error("MongoDB unreachable (%s): not claiming jobs until it is back; %d job "
                      "documents buffered (their state is safe in Redis)", why, len(self.pending))
        self.healthy = False
        self._up.clear()

    def _back(self) -> None:
        if not self.healthy:
            log.warning("MongoDB reachable again: claiming jobs again")
            self._restore_indexes()
        self.healthy = True
        if len(self.pending) <= MAX_BACKLOG // 2 and not self.lost:
            self._up.set()

    def _restore_indexes(self) -> None:
        """After an outage: create again the indexes MongoDB lost (a server restarted
        without its data), saying so in one line. Errors are logged; the next outage's end
        tries again."""
        try:
            missing = self.store.restore_indexes()
        except Exception as exc:  # noqa: BLE001 - never keeps the worker from claiming
            log.warning("could not check the indexes of %s: %s", self.store.jobs.full_name, short_error(exc))
            return
        if missing:
            log.warning("%s had lost %d of its indexes (MongoDB restarted without its data?): created them again; "
                        "`runtime mongo reconcile --full` refills the history Redis still holds",
                        self.store.jobs.full_name, len(missing))

    def _loop(self) -> None:
        backoff = Backoff(0.05, MAX_BACKOFF_S)
        while not self.lost:
            if self.healthy or self.pending:
                self._wake.wait()
            self._wake.clear()
            try:
                if not self.pending:
                    self.store.client.admin.command("ping")  # down with nothing buffered: probe
                while self.pending:
                    batch = list(self.pending.items())[:SYNC_BATCH]
                    self.sync.sync([job_id for job_id, _ in batch])
                    for job_id, change in batch:  # unless it changed again while we copied
                        if self.pending.get(job_id) == change:
                            del self.pending[job_id]
                    if self.healthy and len(self.pending) <= MAX_BACKLOG // 2 and not self.lost:
                        self._up.set()
                self._back()
                backoff.reset()
                continue
            except self._unreachable as exc:
                self._down(exc)
            except REDIS_ERRORS as exc:
                log.warning("cannot read job documents from Redis to copy them to MongoDB: %s", exc)
            except Exception as exc:  # noqa: BLE001 - e.g. MongoDB refusing the credentials: the sweep retries
                log.error("could not copy %d job documents to MongoDB (%s: %s); dropped from the buffer "
                          "(the reconcile sweep retries them)", len(self.pending), type(exc).__name__,
                          short_error(exc))
                self.pending.clear()
                continue
            gevent.sleep(backoff.next())
            self._wake.set()


def open_mirror(broker: RedisBroker, store: JobStore) -> Mirror | None:
    """A Mirror copying to ``store`` when it is the MongoDB store, else None."""
    return Mirror(broker, store) if isinstance(store, MongoJobStore) else None
