"""The worker: claims jobs from Redis and runs them in a gevent pool, losing none.

One loop claims up to ``min(free slots, claim_batch)`` jobs per round trip and starts a
greenlet per job (a plain gevent Greenlet, not a Pool: the slots are counted here). Each
job gets a greenlet of its own, as in Celery's gevent pool: a kill or timer a job leaves
aimed at its greenlet, or greenlet-local state it sets, dies with it (long-lived runner
greenlets, ~35 µs a job cheaper here, let both reach the next job). A flusher greenlet
writes finished attempts in batches (one round trip for all that ended meanwhile); a
reaper greenlet takes back the jobs of dead workers; a native heartbeat thread
(runtime.heartbeat) keeps the registry entry and the claims alive whatever the jobs do.
An idle worker blocks on a wake-up list (BLPOP), so a job queued to an idle worker
starts after about one round trip.

Shutdown (signal handlers only set flags): the first SIGTERM/SIGINT stops claiming and
lets running jobs finish for ``grace_s``; then they are interrupted (status interrupt,
requeued at once, retry count untouched). A second signal interrupts them at once.

gevent must be monkey-patched before anything else is imported: ``runtime worker`` does
it first thing (runtime._entry); a Worker used in an unpatched process says so.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import deque
import socket
import time
from dataclasses import dataclass
from typing import Any, Sequence

import gevent
import gevent.event
import gevent.lock
import psutil
import redis

from .broker import Claimed, Outcome, RedisBroker
from .client import Client, set_default_client
from .connection import connect, transient
from .context import JobContext, current_job
from .errors import JobAborted, JobInterrupt
from .execution import AttemptResult, attempt_with, interrupted, run_attempt
from .job import dumps, utf8_safe
from .middleware import Chain
from .heartbeat import Heartbeat
from .keys import host_pid as _host_pid
from .limits import (EXIT_RECYCLED, SUPERVISOR_ID_ENV, Limits, Recycle, notify_supervisor,
                     record_event)
from .settings import Settings
from .status import Status
from .tasks import resolve

log = logging.getLogger("runtime.worker")

#: Longest an idle worker blocks on its wake-up list before it looks again, seconds.
IDLE_BLOCK_S = 1.0
#: Outcomes written per round trip at most.
FLUSH_BATCH = 500
#: exc_type of an outcome whose own data could not be stored (kept: status and this note).
NOT_STORED = "runtime.OutcomeNotStored"


@dataclass
class RunningJob:
    """A job this worker claimed and has not yet recorded. ``started_at``: local UNIX s."""

    claimed: Claimed
    path: str
    started_at: float
    timeout_s: float | None
    ctx: JobContext
    greenlet: Any = None  # its greenlet (None: prefetched, not started)
    done: bool = False
    began: bool = False  # its greenlet started running it
    ended: bool = False  # its slot was freed
    exclusive: bool = False  # runs alone: the pool drains before it and refills after


class Worker:
    """Runs jobs from ``settings.queues``; ``run()`` returns an exit code (0 = clean stop).

    Raises BrokerUnavailable at construction when Redis cannot be reached.
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or connect(settings)
        self.broker = RedisBroker(self.redis, settings)
        self.id = f"{socket.gethostname()}.{os.getpid()}.{os.urandom(2).hex()}"
        #: jobs started and not yet ended (at most settings.greenlets)
        self.busy = 0
        self.running: dict[str, RunningJob] = {}
        self.jobs_done = 0
        self.started_at = time.time()
        self.state = "starting"
        self._outcomes: list[Outcome] = []
        #: claimed jobs waiting for a free greenlet (prefetch), started as soon as one frees
        self._buffer: deque[RunningJob] = deque()
        self._alone = False  # an exclusive job is running
        self._prefetch = settings.prefetch if settings.prefetch >= 0 else settings.greenlets
        self._outcome_event = gevent.event.Event()
        self._slot = gevent.event.Event()
        self._flush_lock = gevent.lock.Semaphore()
        self._stopping = False
        self._hard = False
        self._waiting: Any = None  # the claim loop's greenlet while it blocks in _idle_wait
        pool = self.redis.connection_pool
        self._wait_conn = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs))
        self._hub = gevent.get_hub()
        self.middleware = Chain.from_settings(settings)
        self._host = socket.gethostname()
        self._missing: dict[str, float] = {}  # worker id -> when its entry was first seen missing
        self.limits = Limits(settings)
        self.recycled: Recycle | None = None
        self.claimed_total = 0
        self.supervisor_id = os.environ.get(SUPERVISOR_ID_ENV, "")
        from .mongo_mirror import open_mirror
        self.mirror = open_mirror(self)  # copies job documents to MongoDB; None without a URL

    # ---- life cycle -------------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work until stopped (or, with ``burst``, until no job is ready, running or delayed)."""
        from gevent import monkey
        if not monkey.is_module_patched("socket"):
            log.warning("gevent has not monkey-patched this process: jobs will not run concurrently "
                        "(start workers with `runtime worker`)")
        from . import greenpoll
        greenpoll.install()
        set_default_client(Client(self.settings, self.redis))
        self.heartbeat = Heartbeat(self)
        self.heartbeat.beat(self.redis)  # registered before the first claim
        try:
            self.reap_once()  # a dead worker's jobs come back before we claim (--burst too)
        except redis.RedisError as exc:
            log.warning("reaper: %s", exc)
        self.heartbeat.start()
        if self.mirror is not None:
            self.mirror.start()
        self.middleware.call("on_worker_start", self)
        # what start-up made lives as long as the process: out of the cyclic collector's way,
        # so that a full collection does not walk it while jobs wait (tens of ms otherwise)
        gc.collect()
        gc.freeze()
        flusher = gevent.spawn(self._flush_loop)
        reaper = gevent.spawn(self._reap_loop)
        handlers = self._install_signals()
        log.info("worker %s started: queues=%s greenlets=%d", self.id, ",".join(self.settings.queues),
                 self.settings.greenlets)
        self.state = "running"
        try:
            self._claim_loop(burst)
        finally:
            self._drain()
            reaper.kill()
            self._flush_now()
            flusher.kill()
            self.middleware.call("on_worker_stop", self)
            self.heartbeat.stop()
            self._deregister()
            if self.mirror is not None:
                self.mirror.stop(timeout_s=min(self.settings.grace_s, 10.0))
            for h in handlers:
                h.cancel()
            log.info("worker %s stopped after %d jobs%s", self.id, self.jobs_done,
                     f" (recycled: {self.recycled.detail})" if self.recycled else "")
        return EXIT_RECYCLED if self.recycled else 0

    def stop(self, hard: bool = False) -> None:
        """Stop claiming; ``hard`` (or a second call) interrupts running jobs at once."""
        if self._stopping:
            hard = True
        self._stopping = True
        self._hard = self._hard or hard
        self.state = "stopping"
        self._slot.set()
        if self._waiting is not None:
            self._hub.loop.run_callback(self._end_wait, self._waiting)

    def recycle(self, why: Recycle) -> None:
        """Stop to be replaced by a fresh process (a limit was crossed): tell the supervisor
        at once (SIGUSR1, so it starts the replacement while this one drains), record the
        event, then stop claiming like a first SIGTERM (running jobs get ``grace_s``)."""
        if self._stopping or self.recycled:
            return
        self.recycled = why
        log.warning("worker %s recycles: %s", self.id, why.detail)
        notify_supervisor()
        self.stop()
        self.state = "recycling"
        record_event(self.redis, self.broker.keys.events, self.limits.event(why, self.id))

    def _install_signals(self) -> list[Any]:
        """SIGTERM/SIGINT: stop (a second one interrupts running jobs). Under a supervisor
        they only ever stop gracefully, so that a signal sent to every process at once
        (systemd's control group, pkill) and forwarded by the supervisor as well does not
        count twice; the supervisor sends SIGUSR2 to interrupt running jobs."""
        import signal
        from ._entry import is_supervised_child
        self._supervised = is_supervised_child()
        handlers = []
        wanted = [(signal.SIGTERM, self._on_signal), (signal.SIGINT, self._on_signal)]
        if self._supervised:
            wanted.append((signal.SIGUSR2, self._on_interrupt_signal))
        for sig, fn in wanted:
            try:
                handlers.append(gevent.signal_handler(sig, fn, sig))
            except ValueError:  # not the main thread
                pass
        return handlers

    _supervised = False

    def _on_interrupt_signal(self, sig: int) -> None:
        log.warning("worker %s got signal %d from its supervisor: interrupting running jobs", self.id, sig)
        self.stop(hard=True)

    def _on_signal(self, sig: int) -> None:
        if self._supervised and self._stopping:
            log.info("worker %s got signal %d: already stopping (its supervisor interrupts running jobs "
                     "on its own second signal)", self.id, sig)
            return
        log.warning("worker %s got signal %d: %s", self.id, sig,
                    "interrupting running jobs" if self._stopping else
                    f"stopping; running jobs have {self.settings.grace_s} s to finish")
        self.stop()

    # ---- claiming -------------------------------------------------------------------------

    def _claim_loop(self, burst: bool) -> None:
        queues = self.settings.queues
        batch = self.settings.claim_batch
        backoff = 0.1
        while not self._stopping:
            if self.mirror is not None and not self.mirror.claim_allowed:
                if burst and self.mirror.burst_may_end(self):
                    return  # MongoDB down and nothing left to run: the sweep copies the rest
                self._pause_for_store()  # MongoDB down or behind: claim nothing until it catches up
                continue
            free = self.settings.greenlets - self.busy
            want = free + self._prefetch - len(self._buffer)
            if self.limits.max_jobs:
                want = min(want, self.limits.max_jobs - self.claimed_total)
            if self._alone or any(r.exclusive for r in self._buffer):
                want = 0  # draining for, or running, a job that runs alone
            if want <= 0 or (free <= 0 and 2 * len(self._buffer) > self._prefetch):
                # full (and enough prefetched), or draining: wait for a greenlet to end (no
                # greenlet can end between the checks above and this clear: nothing yields)
                self._slot.clear()
                if not self._stopping:
                    self._slot.wait()
                continue
            try:
                with self._flush_lock:  # what ended meanwhile is recorded in the same round trip
                    done = self._outcomes[:FLUSH_BATCH]
                    idle = not self._stopping and self.busy == 0 and not self._buffer
                    stale, now, next_due, jobs = self.broker.cycle(done, self.id, min(want, batch), queues, idle)
                    self._recorded(done, stale)
            except Exception as exc:  # noqa: BLE001
                if transient(exc):
                    self.state = "degraded"
                    log.error("cannot claim jobs (%s); retrying in %.1f s", exc, backoff)
                else:  # e.g. an outcome Redis refused: record apart
                    log.exception("claim round trip failed; recording finished jobs on their own")
                    self._flush_now()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self.state = "running"
            for c in jobs:
                rj = self._prepare(c)
                if not self._buffer and self._can_launch(rj):
                    self._launch(rj)
                else:
                    self._buffer.append(rj)
            if jobs:
                continue
            busy = self.busy > 0 or bool(self._buffer)
            if burst and not busy and next_due is None:
                return
            timeout = IDLE_BLOCK_S
            if next_due is not None:
                timeout = min(timeout, max(0.001, next_due - now))
            if burst and busy:
                timeout = min(timeout, 0.05)
            until = time.monotonic() + timeout  # a delayed job is due then: claim it at that time
            handed = self._idle_wait(queues, timeout)
            while handed is not None:
                rj = self._prepare(handed)
                if self._can_launch(rj):
                    self._launch(rj)
                else:
                    self._buffer.append(rj)
                gevent.sleep(0)  # it starts (and most often ends) before we go on
                left = until - time.monotonic()
                if self._stopping or self._buffer or left <= 0:
                    break
                # A job is handed only to an idle worker, when nothing else is due: a job
                # queued since left a wake-up token. So block again rather than claim or
                # prefetch (that round trip would find nothing, and hold up the recording of
                # this job's outcome: peerbench enqueue -> result p50 1.02 -> 0.77 ms here).
                handed = self._idle_wait(queues, left)

    def _pause_for_store(self) -> None:
        """Stay out of the idle lists (no job is handed to us) and wait up to a second for
        the job store to take writes again; the state shows degraded (unreachable) or
        throttled (behind) meanwhile."""
        assert self.mirror is not None
        state = "throttled" if self.mirror.healthy else "degraded"
        if self.state != state:
            self.state = state
            self._leave_idle_lists()
        self.mirror.wait_healthy(1.0)

    def _leave_idle_lists(self) -> None:
        """No job is handed to this worker any more (until its next idle claim)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for q in self.settings.queues:
                pipe.zrem(self.broker.keys.idle(q), self.id)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not leave the idle lists: %s", exc)

    def _idle_wait(self, queues: Sequence[str], timeout_s: float) -> Claimed | None:
        """Block for a job handed to this worker (returned) or a wake-up (None).

        The claim loop blocks here itself (a greenlet of its own for the wait cost a spawn
        and two more hub hops before a handed job could start); ``stop`` ends the wait by
        raising _EndWait in it."""
        if self._stopping:  # stop() came while the claim round trip was in flight
            return None
        self._waiting = gevent.getcurrent()
        try:
            return self.broker.wait_for_wakeup(self._wait_conn, self.id, queues, timeout_s)
        except _EndWait:
            self._wait_conn.connection_pool.disconnect()  # its BLPOP reply is still pending
            return None
        except Exception as exc:  # noqa: BLE001 - Redis down: the claim loop logs and backs off
            log.error("wake-up wait failed (%s)", exc)
            self._wait_conn.connection_pool.disconnect()
            gevent.sleep(0.1)
            return None
        finally:
            self._waiting = None

    def _end_wait(self, g: Any) -> None:
        """In the hub: end the claim loop's wait, if it is still the one ``stop`` saw."""
        if self._waiting is g:
            g.throw(_EndWait())

    # ---- running --------------------------------------------------------------------------

    def _prepare(self, c: Claimed) -> RunningJob:
        try:
            spec_timeout = resolve(c.path, self.settings.task_modules).timeout_s
        except Exception:  # noqa: BLE001 - reported by run_attempt as the job's failure
            spec_timeout = None
        ctx = JobContext(c.id, c.path, c.queue, c.attempt, {}, self.settings.progress_interval_s,
                         self._write_progress, retries=c.retries, due_at=c.due_at, meta=c.meta)
        rj = RunningJob(c, c.path, time.time(), spec_timeout or self.settings.default_timeout_s, ctx)
        if c.alone:  # it was running when a worker died: nothing runs beside it (mark_lost)
            rj.exclusive = True
        elif self.middleware._exclusive:
            rj.exclusive = self.middleware.exclusive(ctx)
        self.running[c.id] = rj
        self.claimed_total += 1
        if self.mirror is not None:
            self.mirror.changed((c.id,))
        return rj

    def _can_launch(self, rj: RunningJob) -> bool:
        if self._alone:
            return False
        return self.busy == 0 if rj.exclusive else self.busy < self.settings.greenlets

    def _launch(self, rj: RunningJob) -> None:
        """Start ``rj`` now in a greenlet of its own (the caller checked _can_launch)."""
        self.busy += 1
        if rj.exclusive:
            self._alone = True
        rj.greenlet = gevent.spawn(self._run_in, rj)

    def _ended(self, rj: RunningJob) -> None:
        """The end of a job's greenlet (in it, or for one killed before it ran): its slot
        frees and the next prefetched jobs start."""
        if rj.ended:
            return
        rj.ended = True
        self.busy -= 1
        if self._alone and self.busy == 0:
            self._alone = False  # the job that ran alone has ended
        while self._buffer and not self._stopping and self._can_launch(self._buffer[0]):
            self._launch(self._buffer.popleft())  # the next prefetched job starts at once
        self._slot.set()

    def _run_in(self, rj: RunningJob) -> None:
        """Run ``rj`` (its greenlet's body); the job always ends recorded, its slot freed."""
        rj.began = True
        try:
            self._run_job(rj)
        except BaseException as exc:  # noqa: BLE001 - e.g. a middleware report that is not JSON
            log.exception("job %s: its outcome could not be prepared; recording it without its data", rj.claimed.id)
            if not rj.done:
                self._append(rj, Outcome(rj.claimed.id, rj.claimed.attempt, Status.FAILED, 0.0, "",
                                         not_stored_fields(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._ended(rj)
        if self._waiting is not None and self._outcomes and not self._flush_lock.locked():
            # the claim loop is blocked waiting for work, so no claim takes this outcome:
            # record it from here, without the two hub hops to the flush loop (~40 µs less
            # from a job's end to its outcome in Redis, when jobs come one at a time)
            self._flush_now()

    def _run_job(self, rj: RunningJob) -> None:
        c = rj.claimed
        token = current_job.set(rj.ctx)
        began = time.time()
        try:
            if self.middleware:
                result = attempt_with(self.middleware, rj.ctx, self.settings, c.path, c.params_json, c.retries)
            else:
                result = run_attempt(self.settings, c.path, c.params_json, c.retries)
        except BaseException as exc:  # noqa: BLE001 - a kill between the steps above
            result = interrupted(exc)
        finally:
            current_job.reset(token)
        # the run itself, by this host's clock (the claim's time is when it was claimed, which
        # for a prefetched job is earlier); queue wait = started_at - due_at (Redis clock)
        result.fields["started_at"] = f"{began:.6f}"
        result.fields["ended_at"] = f"{time.time():.6f}"
        self._record(rj, result)
        if self.limits.active:
            why = self.limits.after_job(c.id)
            if why is not None:
                gevent.spawn(self.recycle, why)

    def _record(self, rj: RunningJob, res: AttemptResult) -> None:
        if rj.done:
            return
        fields = res.store_fields(rj.claimed.retries)
        ctx = rj.ctx
        fields.update(ctx.progress_fields())
        if ctx.logs:
            fields["logs"] = dumps(ctx.logs)
        if ctx.report:
            fields["report"] = capped_json(ctx.report, self.settings.max_report_bytes)
        extra = ctx.__dict__.get("extra_fields")
        if extra:
            fields.update(extra)
        if ctx.__dict__.get("meta_changed"):
            fields["meta"] = dumps(ctx.meta)
        number = res.delay_s if res.status == Status.RETRY else 0.0
        # a lone surrogate must not stop the flush
        fields = {k: v if v.isascii() else utf8_safe(v) for k, v in fields.items()}
        self._append(rj, Outcome(rj.claimed.id, rj.claimed.attempt, res.status, number, res.note, fields))

    def _append(self, rj: RunningJob, outcome: Outcome) -> None:
        """``rj`` ended with ``outcome``: written with the next flush or claim round trip."""
        rj.done = True
        self._outcomes.append(outcome)
        self.jobs_done += 1
        self._outcome_event.set()

    def _write_progress(self, job_id: str, fields: dict[str, str]) -> None:
        try:
            self.redis.hset(self.broker.keys.job(job_id), mapping=fields)
        except redis.RedisError as exc:
            log.warning("progress of job %s not written: %s", job_id, exc)
        if self.mirror is not None:
            self.mirror.progress(job_id, fields)

    def _kill(self, rj: RunningJob, exc: BaseException, status: Status) -> None:
        """Deliver ``exc`` into a job; if it never started, record ``status`` for it."""
        if rj.done:
            return
        g = rj.greenlet
        if g is None:  # prefetched, not started: it ends here
            if rj in self._buffer:
                self._buffer.remove(rj)
                self._record(rj, interrupted_before_start(exc, status))
            return
        if rj.began:
            g.kill(exc, block=False)  # raised where the job waits; a no-op once it has ended
            return
        g.kill(block=False)  # scheduled, not started: it never will be
        self._record(rj, interrupted_before_start(exc, status))
        self._ended(rj)

    def request_abort(self, ids: Sequence[str]) -> None:
        """Abort these running jobs (thread-safe: called from the heartbeat thread)."""
        self._hub.loop.run_callback_threadsafe(self._abort_local, list(ids))

    def _abort_local(self, ids: list[str]) -> None:
        for job_id in ids:
            rj = self.running.get(job_id)
            if rj is not None and not rj.done:
                log.warning("aborting job %s (%s) on request", job_id, rj.path)
                self._kill(rj, JobAborted("aborted on request"), Status.ABORT)

    # ---- recording ------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        """Record outcomes that the claim loop does not take with its next claim (it is
        blocked waiting for work, or stopping)."""
        while True:
            self._outcome_event.wait()
            self._outcome_event.clear()
            gevent.sleep(0)  # let a claim loop woken by the same job end take them first
            if self._outcomes:
                self._flush_now()

    def _flush_now(self) -> None:
        with self._flush_lock:  # one writer at a time: a batch is in flight until recorded
            self._flush_locked()

    def _recorded(self, batch: list[Outcome], stale: list[str]) -> None:
        del self._outcomes[:len(batch)]
        for o in batch:
            self.running.pop(o.id, None)
        if self.mirror is not None:
            self.mirror.changed(o.id for o in batch if o.id not in stale)
        for job_id in stale:
            log.warning("job %s: this attempt was superseded; its outcome was not recorded", job_id)

    def _flush_locked(self) -> None:
        backoff = 0.1
        while self._outcomes:
            batch = self._outcomes[:FLUSH_BATCH]
            # a worker left with nothing to run is idle: say so in the same round trip, so
            # the next job is handed to it (its claim loop is blocked on its handoff list)
            idle = not self._stopping and self.busy == 0 and len(batch) == len(self._outcomes) \
                and (self.mirror is None or self.mirror.claim_allowed)
            try:
                stale = self.broker.finish(batch, self.settings.queues if idle else (), self.id)
            except Exception as exc:  # noqa: BLE001 - one bad outcome must not stop recording
                if not transient(exc):
                    self._unstorable(batch, exc)
                    continue
                self._retry_later(len(batch), exc, backoff)
                backoff = min(backoff * 2, 5.0)
                if self._hard and backoff >= 5.0:
                    return  # the reaper requeues them once this worker's registry expires
                continue
            self._recorded(batch, stale)

    def _unstorable(self, batch: list[Outcome], exc: BaseException) -> None:
        """Redis refused ``batch`` for what it holds (not for being unreachable or busy):
        record it without its data next, or, refused even so, leave it (requeued when
        this worker stops)."""
        if all(o.fields.get("exc_type") == NOT_STORED for o in batch):
            log.error("dropping %d outcomes that cannot be stored (%s); their jobs are requeued "
                      "when this worker stops", len(batch), exc)
            del self._outcomes[:len(batch)]
            return
        log.error("could not record %d finished jobs (%s); recording them without their data", len(batch), exc)
        for o in batch:
            o.fields = not_stored_fields(exc)

    def _retry_later(self, n: int, exc: BaseException, backoff: float) -> None:
        self.state = "degraded"
        log.error("cannot record %d finished jobs (%s); retrying in %.1f s", n, exc, backoff)
        gevent.sleep(backoff)

    # ---- reaping --------------------------------------------------------------------------

    def _reap_loop(self) -> None:
        while True:
            try:
                self.reap_once()
            except redis.RedisError as exc:
                log.warning("reaper: %s", exc)
            gevent.sleep(self.settings.reap_interval_s)

    def reap_once(self) -> tuple[int, int]:
        """Requeue the jobs of dead workers; returns (requeued, failed worker-lost).

        Dead: on this host, its pid is gone (or is another process now); elsewhere, its
        registry entry has been missing for a whole ``worker_ttl_s`` as seen by this
        reaper. (An entry also vanishes when Redis restarts or a heartbeat stalls; a live
        worker re-registers within a heartbeat, so it is not taken for dead.)
        """
        keys = self.broker.keys
        ids = [w for w in self.redis.smembers(keys.workers) if w != self.id]
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hmget(keys.worker(wid), "host", "pid", "pid_started")
        dead = []
        now = time.monotonic()
        for wid, (host, pid, pid_started) in zip(ids, pipe.execute() if ids else []):
            if host is None:
                host, pid = _host_pid(wid)
            else:
                self._missing.pop(wid, None)
            if host == self._host and pid is not None:
                if not _alive(int(pid), (float(pid_started) if pid_started else 0.0) or None):
                    dead.append(wid)
            elif host is None or pid is None:
                first = self._missing.setdefault(wid, now)
                if now - first >= self.settings.worker_ttl_s:
                    dead.append(wid)
                    self._missing.pop(wid, None)
        unstarted: list[str] = []
        if dead:  # its running jobs run alone next time; what it had only prefetched is not charged
            unstarted = self.broker.mark_lost(dead, "its worker process died")[1]
        requeued, failed = self.broker.reap(dead, unstarted=unstarted)
        if self.mirror is not None:
            self.mirror.after_reap(self.id, requeued + failed)
        if dead or requeued or failed:
            log.warning("reaper: %d dead workers, %d jobs requeued, %d failed (worker-lost)",
                        len(dead), requeued, failed)
        return requeued, failed

    # ---- stopping -------------------------------------------------------------------------

    def _drain(self) -> None:
        self.state = "draining"
        self._leave_idle_lists()  # no more jobs handed to us; any handed meanwhile are requeued at deregistration
        if self._buffer:  # first, so that other workers (or the replacement) take them now
            log.info("returning %d prefetched jobs to their queues", len(self._buffer))
            while self._buffer:
                self._record(self._buffer.popleft(), AttemptResult(
                    Status.INTERRUPT, reason="interrupted", note="prefetched; the worker stopped before running it"))
            self._flush_now()
        self._wait_for_jobs(self.settings.grace_s)
        leftover = [rj for rj in self.running.values() if not rj.done and rj.greenlet is not None]
        if leftover:
            log.warning("interrupting %d running jobs; they are requeued", len(leftover))
        for rj in leftover:
            self._kill(rj, JobInterrupt("worker shutting down"), Status.INTERRUPT)
        self._wait_for_jobs(5.0, even_hard=True)

    def _wait_for_jobs(self, timeout_s: float, even_hard: bool = False) -> None:
        """Wait until no job runs, at most ``timeout_s`` (and, unless ``even_hard``, only
        until a hard stop is asked)."""
        deadline = time.monotonic() + timeout_s
        while self.busy and (even_hard or not self._hard):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._slot.clear()
            if self.busy:
                self._slot.wait(timeout=remaining)

    def _deregister(self) -> None:
        try:
            self.broker.reap([], stopping=self.id)  # requeues what was handed to us unrun; drops our entry
        except redis.RedisError as exc:
            log.warning("could not deregister (%s); the registry entry expires in %.0f s",
                        exc, self.settings.worker_ttl_s)


class _EndWait(BaseException):
    """Raised in the claim loop's idle wait by ``stop`` (a BaseException: nothing between
    the wait and _idle_wait may take it for an error of its own)."""


def not_stored_fields(exc: BaseException) -> dict[str, str]:
    """The fields of an outcome whose own data could not be stored (status kept)."""
    return {"exc_type": NOT_STORED, "reason": "not-stored",
            "exc_message": f"the outcome could not be stored: {type(exc).__name__}: {exc}"[:2000]}


def interrupted_before_start(exc: BaseException, status: Status) -> AttemptResult:
    """The outcome of a job killed (abort, interrupt) before its greenlet ran."""
    res = interrupted(exc)
    res.note = f"{res.note + '; ' if res.note else ''}it had not started"
    return res


def capped_json(report: dict[str, Any], max_bytes: int) -> str:
    """``report`` as JSON; over ``max_bytes``, its largest entries are replaced by a marker
    saying how big they were, until it fits."""
    text = dumps(report)
    if len(text) <= max_bytes:
        return text
    report = dict(report)
    for key in sorted(report, key=lambda k: -len(dumps(report[k]))):
        report[key] = {"truncated": f"{len(dumps(report[key]))} bytes, over max_report_bytes={max_bytes}"}
        text = dumps(report)
        if len(text) <= max_bytes:
            break
    return text


def _alive(pid: int, started: float | None) -> bool:
    """Is ``pid`` alive and (when ``started`` is known) the same process as registered?"""
    try:
        created = psutil.Process(pid).create_time()
        return started is None or abs(created - started) < 0.01
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False
