"""Stopping a worker (:func:`serve` with its signal handlers, the drain that loses no job)
and a job (:func:`kill`: an interrupt delivered into it, for a stop or an abort).

The first SIGTERM/SIGINT stops claiming and lets running jobs finish for ``grace_s``;
a supervisor's scale-down drain (SIGUSR1, ``patient``) lets them finish however long they
take (a SIGTERM meanwhile starts the grace period, a SIGUSR2 interrupts them);
then they are interrupted (status interrupt, requeued at once, retry count untouched).
A second signal interrupts them at once, even a job that holds the gevent hub
(runtime.worker.signals). Under a supervisor, SIGTERM/SIGINT only ever
stop gracefully (a signal sent to every process at once, by systemd's control group or
pkill, and forwarded by the supervisor as well, must not count twice); the supervisor
sends SIGUSR2 to interrupt running jobs. Prefetched jobs, claimed but never started, go
back to their queue first, so that other workers (or the replacement) take them now.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..broker import RedisBroker
from ..errors import JobAborted, JobInterrupt
from ..execution import AttemptResult
from ..process import is_supervised_child
from ..settings import Settings
from ..status import Status
from .recorder import Recorder, interrupted_before_start
from .slots import RunningJob, Slots
from .state import Phase, WorkerState


class Stoppable(Protocol):
    """What shutdown needs of its worker (runtime.worker.worker.Worker is one)."""

    id: str
    settings: Settings
    broker: RedisBroker
    slots: Slots
    recorder: Recorder
    state: WorkerState
    stopping: bool
    hard: bool
    patient: bool

    def stop(self, hard: bool = False) -> None: ...

    def flag_stop(self, hard: bool) -> None: ...

    def wake_for_stop(self) -> None: ...

    def leave_idle(self) -> None: ...

    def run(self, burst: bool = False) -> int: ...

log = logging.getLogger("runtime.worker")


def serve(worker: Stoppable, burst: bool) -> int:
    """Run ``worker`` in a process of its own: with its signal handlers
    (runtime.worker.signals), and redis-py's readiness checks kept off the hub
    (runtime.worker.greenpoll); returns its exit code."""
    from .greenpoll import install
    from .patching import guard_forks
    from .signals import Signals
    from .watching import keep_watchdog, start_watchdog
    install()
    guard_forks()
    signals = Signals(worker, is_supervised_child())
    signals.install()
    import gevent
    watchdog = gevent.spawn(keep_watchdog, worker, start_watchdog(worker))
    try:
        return worker.run(burst)
    finally:
        watchdog.kill()
        signals.uninstall()


def drain(worker: Stoppable) -> None:
    """After the claim loop ends: return prefetched jobs to their queues, let running jobs
    finish (while ``patient``, however long they take; then for ``grace_s``; less after a
    hard stop), then interrupt and requeue the rest."""
    worker.state = WorkerState.DRAINING
    worker.leave_idle()  # no more jobs handed to us; any handed meanwhile are requeued at deregistration
    prefetched = worker.slots.unlaunched()
    if prefetched:
        log.info("returning %d prefetched jobs to their queues", len(prefetched))
        for rj in prefetched:
            worker.recorder.record(rj, AttemptResult(
                Status.INTERRUPT, reason="interrupted", note="prefetched; the worker stopped before running it"))
        worker.recorder.flush()
    if worker.patient and worker.slots.busy:
        log.info("draining: %d running jobs finish, however long they take", len(worker.slots.launched()))
    while worker.patient and worker.slots.busy and not worker.hard:
        worker.slots.wait_freed(1.0)  # a SIGTERM meanwhile ends the patience: the grace starts
    wait_for_jobs(worker, worker.settings.grace_s)
    leftover = worker.slots.launched()
    if leftover:
        log.warning("interrupting %d running jobs; they are requeued", len(leftover))
    for rj in leftover:
        kill(worker, rj, JobInterrupt("worker shutting down"))
    wait_for_jobs(worker, 5.0, even_hard=True)


def wait_for_jobs(worker: Stoppable, timeout_s: float, even_hard: bool = False) -> None:
    """Wait until no job runs, at most ``timeout_s`` (and, unless ``even_hard``, only
    until a hard stop is asked)."""
    deadline = time.monotonic() + timeout_s
    while worker.slots.busy and (even_hard or not worker.hard):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        worker.slots.wait_freed(remaining)


def kill(worker: Stoppable, rj: RunningJob, exc: BaseException) -> None:
    """Deliver ``exc`` into a job of ``worker``; one that never started ends here with the
    status ``exc`` stands for (runtime.execution.interrupted)."""
    if rj.done:
        return
    g = rj.greenlet
    if g is None:  # prefetched, not started: it ends here
        if worker.slots.drop_prefetched(rj):
            worker.recorder.record(rj, interrupted_before_start(exc))
        return
    if rj.phase >= Phase.RUNNING:
        g.kill(exc, block=False)  # raised where the job waits; a no-op once it has ended
        return
    g.kill(block=False)  # scheduled, not started: it never will be
    worker.recorder.record(rj, interrupted_before_start(exc))
    worker.slots.ended(rj, refill=not worker.stopping)


def abort(worker: Stoppable, ids: list[str]) -> None:
    """Abort these running jobs of ``worker`` (in its hub)."""
    for job_id in ids:
        rj = worker.slots.jobs.get(job_id)
        if rj is not None and not rj.done:
            log.warning("aborting job %s (%s) on request", job_id, rj.path)
            kill(worker, rj, JobAborted("aborted on request"))
