"""The worker: claims jobs from Redis and runs them in gevent greenlets, losing none.

A :class:`Worker` is given its parts (settings, broker, job store, middleware chain) and
owns the loop: it claims up to ``min(free slots + prefetch room, claim_batch)`` jobs per
round trip (recording what ended meanwhile in the same round trip) and hands them to its
slots (runtime.worker.slots), which start a greenlet per job. An idle worker blocks on a
wake-up list (BLPOP), so a job queued to an idle worker starts after about one round
trip. Its other parts: the recorder (outcomes to Redis in batches), the reaper (jobs of
dead workers back), the heartbeat (a native thread: registry entry, claim extension,
aborts, the recycling limits' timer), the shutdown (drain, signals).

``run(burst=True)`` returns once no job is ready, running or delayed: tests drive a
worker in-process that way. ``serve()`` is ``run()`` for a process of its own (signals,
gevent's hub set up): what ``runtime worker`` calls after monkey-patching first thing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent

from ..backoff import Backoff
from ..broker import RedisBroker, release_unknown
from ..broker.connection import REDIS_ERRORS, where
from ..catalog import Served, load_tasks, summary
from ..client import Client, Parts, build, set_default_client
from ..context import JobContext, current_job
from ..errors import ExitCode
from ..execution import interrupted, run_attempt
from ..job import loads
from ..messages import Claimed, Outcome
from ..middleware import Chain
from ..process import exit_if_forked, new_id, notify_supervisor, settle_heap, supervisor_id
from ..settings import Settings
from ..status import Status
from ..store import JobStore
from ..units import plural
from .heartbeat import Heartbeat
from .limits import Limits, Recycle
from .link import RedisLink
from .reaper import Reaper, reap_for, reap_loop
from .recorder import Recorder, not_stored_fields
from .shutdown import abort, drain, serve
from .slots import RunningJob, Slots
from .starts import StartRecords
from .state import Phase, WorkerState
from .unserved import only_handed_back, task_timeout, unserved_result
from .wakeup import Wakeup

log = logging.getLogger("runtime.worker")

#: Longest an idle worker blocks on its wake-up list before it looks again, seconds.
IDLE_BLOCK_S = 1.0


class Worker:
    """Runs jobs from ``settings.queues`` with the given parts; ``run()`` returns an exit
    code (ExitCode.OK, or ExitCode.RECYCLED when a limit made it stop). ``served``: its
    task modules imported (runtime.catalog; by default here)."""

    def __init__(self, settings: Settings, broker: RedisBroker, store: JobStore, middleware: Chain,
                 served: Served | None = None) -> None:
        self.served = served or load_tasks(settings.task_modules)
        middleware.check(self.served)  # a bad schedule refuses the worker here (ConfigError)
        self.settings = settings
        self.broker = broker
        broker.caps = self.served.caps()  # enforced by claim.lua (runtime.caps)
        self.store = store
        self.live = store.live
        self.middleware = middleware
        self.id = new_id()
        self.started_at = time.time()
        self.state = WorkerState.STARTING
        self.stopping = self.hard = False
        self.patient = False  # stopping by a scale-down drain: running jobs finish, however long
        self.recycled: Recycle | None = None
        self.claimed_total = 0
        #: jobs this worker handed back (tasks it does not serve): --burst does not wait for them
        self.handed_back: set[str] = set()
        self.supervisor_id = supervisor_id()
        prefetch = settings.prefetch if settings.prefetch >= 0 else settings.greenlets
        self.slots = Slots(settings.greenlets, prefetch, self._run_in)
        self.recorder = Recorder(self)
        self.slots.on_launch = (starts := StartRecords(broker)).launched  # a reaper charges started jobs
        self.starts = starts
        self.link = RedisLink(where(broker.redis))
        self.reaper = Reaper(broker, self.id, self.link)
        self.limits = Limits(settings)
        self.mirror: Any = None
        if store is not store.live:
            from ..store.mongo.mirror import open_mirror
            self.mirror = open_mirror(broker, store)  # copies job documents to MongoDB
        self.client = Client(  # the task-side producer on the same parts: no new connection
            parts=Parts(settings, broker.redis, broker, store, middleware), import_tasks=False)
        self.paused: frozenset[str] = frozenset()  # paused queues, as the last heartbeat read them
        self.heartbeat = Heartbeat(self)
        self.wakeup = Wakeup(broker, self.id, settings.queues, self.link)
        self._hub = gevent.get_hub()
        #: the process is this worker's own (serve): start-up objects are frozen out of gc
        self.owns_process = False
        self._cooperative = True  # gevent patched the sockets: Redis calls yield to the jobs
        self._outages = 0  # Redis outages of self.link after which unknown claims were released

    @classmethod
    def from_settings(cls, settings: Settings) -> Worker:
        """A worker with parts built from ``settings``, its task modules imported first.
        Raises TaskImportError, BrokerUnavailable, StoreUnavailable, ConfigError."""
        served = load_tasks(settings.task_modules)
        return cls(settings, (p := build(settings)).broker, p.store, p.middleware, served)

    # ---- what others read -----------------------------------------------------------------

    @property
    def jobs_done(self) -> int:
        return self.recorder.jobs_done

    @property
    def state_name(self) -> str:
        return self.state.value

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Ready and delayed jobs of this worker's queues (for middleware: metrics)."""
        return self.broker.registry.queue_depths(self.settings.queues)

    # ---- life cycle -----------------------------------------------------------------------

    def serve(self, burst: bool = False) -> int:
        """:meth:`run` in a process of its own (runtime.worker.shutdown.serve)."""
        self.owns_process = True
        return serve(self, burst)

    def run(self, burst: bool = False) -> int:
        """Work until stopped (or, with ``burst``, until no job is ready, running or delayed).

        In a process gevent has not monkey-patched, Redis calls block the hub: jobs then run
        one batch at a time, between claims (a warning says so)."""
        from gevent import monkey
        self._cooperative = monkey.is_module_patched("socket")
        if not self._cooperative:
            log.warning("gevent has not monkey-patched this process: jobs will not run concurrently "
                        "(start workers with `runtime worker`, or call gevent.monkey.patch_all() first)")
        if self.mirror is not None:  # MongoDB reachable, ours, indexed: before anything is claimed
            self.mirror.start(self.id, on_down=self.leave_idle, on_lost=self.stop)
        previous = set_default_client(self.client)
        self.heartbeat.register()  # before the first claim
        self.heartbeat.start()
        self.starts.open()
        self.middleware.call("on_worker_start", self)  # Sentry, logs... hear of the reap too
        reap_for(self)  # a dead worker's jobs come back before we claim (--burst too)
        self.limits.baseline()
        if self.owns_process:
            settle_heap()
        helpers = [gevent.spawn(self.recorder.flush_loop), gevent.spawn(reap_loop, self)]
        log.info("worker %s %s", self.id, summary(self.served))
        log.info("worker %s started: redis %s%s prefix %s, queues %s, %d greenlets", self.id, self.link.where,
                 f" (embedded: {self.settings.embedded_path})," if not self.settings.redis_url else ",",
                 self.settings.key_prefix, ",".join(self.settings.queues), self.settings.greenlets)
        self.state = WorkerState.RUNNING
        try:
            self._claim_loop(burst)
        finally:
            self._shut_down(helpers)
            set_default_client(previous)
        ended = self.mirror.exit_code if self.mirror is not None else None  # MongoDB away, or not ours any more
        return ExitCode.RECYCLED if self.recycled else ended or ExitCode.OK

    def _shut_down(self, helpers: list[Any]) -> None:
        drain(self)
        helpers[1].kill()
        self.recorder.flush()
        helpers[0].kill()
        self.middleware.call("on_worker_stop", self)
        self.heartbeat.stop()
        try:
            self.broker.reap(stopping=self.id)  # requeues what was handed to us unrun; drops our entry
        except REDIS_ERRORS as exc:
            log.warning("could not deregister (%s); the registry entry expires in %.0f s",
                        exc, self.settings.worker_ttl_s)
        if self.mirror is not None:
            self.mirror.stop(timeout_s=min(self.settings.grace_s, 10.0))
        self.wakeup.close()
        self.starts.close()
        self.state = WorkerState.STOPPED
        log.info("worker %s stopped: ran %d %s%s", self.id, self.jobs_done, plural(self.jobs_done, "job"), f"; "
                 f"recycled at: {self.recycled.detail}, then finished the jobs running" if self.recycled else "")

    def stop(self, hard: bool = False) -> None:
        """Stop claiming; ``hard`` (or a second call) interrupts running jobs at once."""
        self.flag_stop(hard or self.stopping)
        self.wake_for_stop()

    def flag_stop(self, hard: bool) -> None:
        """:meth:`stop`'s flags alone: safe in a signal handler (runtime.worker.signals)."""
        self.stopping, self.hard, self.state = True, self.hard or hard, WorkerState.STOPPING

    def wake_for_stop(self) -> None:
        """Wake the claim loop (and the drain) to act on :meth:`flag_stop`'s flags."""
        self.slots.freed.set()
        self.wakeup.end()

    def recycle(self, why: Recycle) -> None:
        """Stop to be replaced by a fresh process (a limit was crossed): tell the supervisor
        at once (SIGUSR1, so it starts the replacement while this one drains), record the
        event, then stop claiming like a first SIGTERM (running jobs get ``grace_s``)."""
        if self.stopping or self.recycled:
            return
        self.recycled = why
        log.warning("worker %s recycles: %s", self.id, why.detail)
        self.middleware.call("on_worker_recycle", self)  # before its replacement starts
        notify_supervisor()
        self.stop()
        self.state = WorkerState.RECYCLING
        self.broker.registry.record_event(self.limits.event(why, self.id))

    def from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a new greenlet of this worker's hub (from any thread)."""
        self._hub.loop.run_callback_threadsafe(gevent.spawn, fn, *args)

    # ---- claiming -------------------------------------------------------------------------

    def _claim_loop(self, burst: bool) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self.stopping:
            if self.mirror is not None and not self.mirror.claim_allowed:
                if burst and self.mirror.burst_may_end(not self.slots.empty, self.settings.queues):
                    return  # MongoDB down and nothing left to run: the sweep copies the rest
                self._pause_for_store()  # MongoDB down or behind: claim nothing until it catches up
                continue
            budget = self.limits.max_jobs - self.claimed_total if self.limits.max_jobs else None
            want = self.slots.wanted(self.settings.claim_batch, budget)
            if want == 0:  # full (and enough prefetched), or draining: wait for a greenlet to end
                if not self.stopping:
                    self.slots.wait_freed()
                continue
            claimed = self._claim(want, backoff)
            if claimed is None:
                continue
            now, next_due, jobs = claimed
            if self.broker.caps and self._cooperative and self.slots.batch_waiting:  # held at a cap, the reply
                gevent.sleep(0)  # came before the last claim's jobs ran: they run first, to free their slots
            self.slots.hold_batch([self._prepare(c) for c in jobs])  # they run during the next round trip
            if jobs:
                if not self._cooperative:
                    gevent.sleep(0)  # Redis calls do not yield here: let the jobs run now
                continue
            if self.broker.caps and self.recorder.outcomes:
                continue  # held at a cap: the next claim records what ended, which frees slots
            if burst and self.slots.empty and (next_due is None or only_handed_back(self)):
                if not self.recorder.outcomes:
                    return
                continue  # record them with the next claim: one may be a retry, due later
            self._idle(now, next_due, burst)

    def _claim(self, want: int, backoff: Backoff) -> tuple[float, float | None, list[Claimed]] | None:
        """Record what ended and claim up to ``want`` jobs, in one round trip; None after an
        error (logged, and backed off)."""
        try:
            with self.recorder.lock:  # what ended meanwhile is recorded in the same round trip
                done = self.recorder.batch()
                idle = not self.stopping and self.slots.empty
                queues = [q for q in self.settings.queues if q not in self.paused]  # paused: claim none
                stale, now, next_due, jobs = self.broker.cycle(done, self.id, want, queues, idle)
                self.recorder.recorded(done, stale)
        except Exception as exc:  # noqa: BLE001
            delay = backoff.next()
            if self.link.failed(exc, "claiming jobs"):
                self.state = WorkerState.DEGRADED
            else:  # e.g. an outcome Redis refused: record apart
                log.exception("claim round trip failed; recording finished jobs on their own")
                self.recorder.flush()
            gevent.sleep(delay)
            return None
        backoff.reset()
        self.link.ok("claiming jobs")
        if self._outages != self.link.outages:  # a claim's reply may have been lost with the connection
            self._outages = self.link.outages if release_unknown(self.broker, self.id, jobs, self.slots.jobs) else 0
        self.state = WorkerState.RUNNING
        return now, next_due, jobs

    def _idle(self, now: float, next_due: float | None, burst: bool) -> None:
        """Nothing was due: block until a job is handed to us, one is queued, or a delayed
        one is due (claim it then)."""
        timeout = IDLE_BLOCK_S
        if next_due is not None:
            timeout = min(timeout, max(0.001, next_due - now))
        if burst and not self.slots.empty:
            timeout = min(timeout, 0.05)
        until = time.monotonic() + timeout
        handed = self._idle_wait(timeout)
        while handed is not None:
            self.slots.hold(self._prepare(handed))
            gevent.sleep(0)  # it starts (and most often ends) before we go on
            left = until - time.monotonic()
            if self.stopping or self.slots.buffer or left <= 0:
                break
            # A job is handed only to an idle worker when nothing else is due (a job queued
            # since left a wake-up token): block again rather than claim, which would find
            # nothing and hold up this job's outcome (peerbench's enqueue -> result p50 +25 %).
            handed = self._idle_wait(left)

    def _pause_for_store(self) -> None:
        """Stay out of the idle lists and wait up to a second for the job store to take
        writes again; the state shows degraded (unreachable) or throttled (behind)."""
        state = WorkerState.THROTTLED if self.mirror.healthy else WorkerState.DEGRADED
        if self.state != state:
            self.state = state
            self.leave_idle()
        self.mirror.wait_healthy(1.0)

    def leave_idle(self) -> None:
        """No job is handed to this worker any more (until its next idle claim)."""
        try:
            self.broker.registry.leave_idle(self.id, self.settings.queues)
        except REDIS_ERRORS as exc:
            log.warning("could not leave the idle lists: %s", exc)

    def _idle_wait(self, timeout_s: float) -> Claimed | None:
        """A job handed to this worker, or None: a wake-up, or a stop came meanwhile."""
        return None if self.stopping else self.wakeup.wait(timeout_s)

    # ---- running --------------------------------------------------------------------------

    def _prepare(self, c: Claimed) -> RunningJob:
        timeout_s, unserved, keep = task_timeout(c, self.settings.task_modules, self.settings.default_timeout_s)
        ctx = JobContext(c.id, c.path, c.queue, c.attempt, {}, self.settings.progress_interval_s,
                         self._write_progress, retries=c.retries, due_at=c.due_at, meta=c.meta)
        rj = RunningJob(c, ctx, timeout_s, time.time(), unserved=unserved, keep=keep)
        # it was running when a worker died: nothing runs beside it (runtime.broker.lost.mark_lost)
        rj.exclusive = c.alone or (bool(self.middleware.exclusive_hooks) and self.middleware.exclusive(ctx))
        self.claimed_total += 1
        if self.mirror is not None:
            self.mirror.changed((c.id,))
        return rj

    def _run_in(self, rj: RunningJob) -> None:
        """Run ``rj`` (its greenlet's body); the job always ends recorded, its slot freed."""
        rj.phase = Phase.RUNNING
        try:
            self._run_job(rj)
        except BaseException as exc:  # noqa: BLE001 - e.g. a middleware report that is not JSON
            log.exception("job %s: its outcome could not be prepared; recording it without its data", rj.id)
            if not rj.done:
                self.recorder.append(rj, Outcome(rj.id, rj.claimed.queue, rj.claimed.attempt, Status.FAILED,
                                                 fields=not_stored_fields(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            self.slots.ended(rj, refill=not self.stopping)
        if self.wakeup.waiting is not None and self.recorder.outcomes and not self.recorder.lock.locked():
            # the claim loop is blocked waiting for work, so no claim takes this outcome:
            # record it from here, without the two hub hops to the flush loop (~40 µs less
            # from a job's end to its outcome in Redis, when jobs come one at a time)
            self.recorder.flush()

    def _run_job(self, rj: RunningJob) -> None:
        c = rj.claimed
        if rj.unserved is not None:  # runtime.worker.unserved: no middleware, no attempt counted
            res = unserved_result(c, rj.unserved, self.id, self.settings.unserved_timeout_s)
            self.recorder.record(rj, res)
            if res.status == Status.RETRY:
                self.handed_back.add(c.id)
            return
        token = current_job.set(rj.ctx)
        rj.ctx.started_at = began = time.time()
        try:
            rj.ctx.params = params = loads(c.params_json)  # a corrupt document fails the job
            if self.middleware:
                result = self.middleware.run_attempt(rj.ctx, self.settings, params)
            else:
                result = run_attempt(self.settings, c.path, params, c.retries)
        except BaseException as exc:  # noqa: BLE001 - a kill between the steps above
            result = interrupted(exc)
        finally:
            exit_if_forked(self.heartbeat.pid)  # a child of a task that forked: never back in here
            current_job.reset(token)
        # the run itself, by this host's clock (a prefetched job's claim is earlier)
        result.fields["started_at"] = f"{began:.6f}"
        result.fields["ended_at"] = f"{time.time():.6f}"
        self.recorder.record(rj, result)
        if self.limits.active:
            why = self.limits.after_job(c.id)
            if why is not None:
                gevent.spawn(self.recycle, why)

    def _write_progress(self, job_id: str, fields: dict[str, str]) -> None:
        try:
            self.live.set_fields(job_id, fields)
        except REDIS_ERRORS as exc:
            log.warning("progress of job %s not written: %s", job_id, exc)
        if self.mirror is not None:
            self.mirror.progress(job_id, fields)

    def request_abort(self, ids: list[str]) -> None:
        """Abort these running jobs (thread-safe: called from the heartbeat thread)."""
        self.from_thread(abort, self, ids)
