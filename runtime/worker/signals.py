"""A worker's signal handlers, heard even while a CPU-bound job holds the gevent hub.

gevent's handlers (``gevent.signal_handler``) run only when the hub runs, which a job that
never yields prevents for as long as it runs. Python-level handlers (``signal.signal``)
run in the main thread between two bytecodes of whatever runs there, job or not. So the
handlers here are Python-level; they set the worker's flags (``stopping``, ``hard``: plain
attribute writes, safe anywhere) and leave the rest (the log line, waking the claim loop,
the drain and its kills) to a greenlet started through the hub.

On a hard stop they also interrupt the job that holds the main thread, by raising
:class:`~runtime.errors.JobInterrupt` from the handler, but only when it lands in the
task's own code (:func:`in_task_code`): the current greenlet is one of the worker's
running jobs, and every frame out to runtime's call of the task belongs to neither runtime
nor a library whose state an exception at an arbitrary bytecode could corrupt (a lock
acquired but not yet in its ``try``, a Redis connection between request and reply).
Anywhere else nothing is raised, and the handler looks again every :data:`RETRY_S`
(SIGALRM, armed with ``setitimer``) while jobs run: a job in its own code then, or at its
next yield (the drain's kill, as after the grace period), is interrupted and requeued.

What each signal does: SIGTERM/SIGINT, the first stops gracefully, the second interrupts
running jobs. Under a supervisor SIGTERM/SIGINT only ever stop gracefully, SIGUSR2
interrupts, and SIGUSR1 (an autoscaling drain) stops claiming and lets running jobs finish
however long they take (see runtime.worker.shutdown).
"""

from __future__ import annotations

import logging
import signal
from types import CodeType, FrameType
from typing import Any, Protocol

import gevent

from ..errors import JobInterrupt
from ..execution import call_frame_code
from ..settings import Settings
from ..tasks import TaskSpec
from .slots import Slots
from .state import Phase

log = logging.getLogger("runtime.worker")

#: Seconds between two more looks for a running job to interrupt, after a hard stop.
RETRY_S = 0.05

#: Top-level packages whose frames a signal handler never raises into: runtime's own
#: bookkeeping, and libraries that hold locks, connections or context between bytecodes.
NOT_THE_TASK = frozenset({"runtime", "diagnostics", "logging", "threading", "gevent", "greenlet", "redis",
                          "importlib", "opentelemetry", "sentry_sdk", "queue", "concurrent", "pyinstrument"})

#: The frame that calls a task (everything inside it is the task's), and the thin callables
#: TaskSpec.bind returns between the two.
_CALLER = call_frame_code()
_BIND = frozenset(c for c in TaskSpec.bind.__code__.co_consts if isinstance(c, CodeType))


def in_task_code(frame: FrameType | None) -> bool:
    """Is ``frame`` (the innermost frame of the main thread) in a task's own code, called
    by runtime.execution.run_attempt, with no frame of :data:`NOT_THE_TASK` in between?"""
    seen_task = False
    while frame is not None:
        code = frame.f_code
        if code is _CALLER:
            return seen_task
        if code not in _BIND:
            module = frame.f_globals.get("__name__") or ""
            if module.partition(".")[0] in NOT_THE_TASK:
                return False
            seen_task = True
        frame = frame.f_back
    return False


class Signalled(Protocol):
    """What the handlers need of their worker (runtime.worker.worker.Worker is one)."""

    id: str
    settings: Settings
    slots: Slots
    stopping: bool
    hard: bool
    patient: bool

    def flag_stop(self, hard: bool) -> None: ...

    def wake_for_stop(self) -> None: ...


class Signals:
    """The signal handlers of ``worker``; ``supervised``: started by a supervisor.
    ``install()`` in the main thread, ``uninstall()`` when the worker has stopped."""

    def __init__(self, worker: Signalled, supervised: bool) -> None:
        self.worker = worker
        self.supervised = supervised
        #: SIGTERM/SIGINT received so far
        self.heard = 0
        self._hub = gevent.get_hub()
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Take SIGTERM, SIGINT (and SIGUSR1, SIGUSR2 when supervised); False outside the
        main thread, where Python cannot set handlers (nothing is installed then)."""
        wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR1, signal.SIGUSR2] if self.supervised else [])
        try:
            for sig in wanted:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread
            return False
        return True

    def uninstall(self) -> None:
        """Stop the retries and put the previous handlers back."""
        if signal.SIGALRM in self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The handler (main thread, between two bytecodes): flags now, the rest in a greenlet."""
        w = self.worker
        was_stopping = w.stopping
        if signum == signal.SIGUSR1:  # a drain changes nothing for a worker already stopping
            hard, w.patient = False, w.patient or not was_stopping
        elif signum == signal.SIGUSR2:
            hard = True
        else:
            self.heard += 1
            hard, w.patient = self.heard > 1 and not self.supervised, False
        w.flag_stop(hard)
        self._hub.loop.run_callback_threadsafe(gevent.spawn, self._heard, signum, hard, was_stopping)
        if hard:
            self._interrupt(frame)

    def _heard(self, signum: int, hard: bool, was_stopping: bool) -> None:
        """In a greenlet of the worker: say what the signal does, and wake the claim loop
        (and the drain) to act on the flags."""
        w = self.worker
        if signum == signal.SIGUSR2:
            log.warning("worker %s got signal %d from its supervisor: interrupting running jobs", w.id, signum)
        elif signum == signal.SIGUSR1:
            log.info("worker %s got signal %d from its supervisor: draining (stops claiming; running jobs "
                     "finish, however long they take)%s", w.id, signum, "" if w.patient else "; already stopping")
        elif self.supervised and was_stopping:
            log.info("worker %s got signal %d: already stopping (its supervisor interrupts running jobs "
                     "on its own second signal)", w.id, signum)
        else:
            log.warning("worker %s got signal %d: %s", w.id, signum, "interrupting running jobs" if hard else
                        f"stopping; running jobs have {w.settings.grace_s} s to finish")
        w.wake_for_stop()

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.worker.hard:
            self._interrupt(frame)

    def _interrupt(self, frame: FrameType | None) -> None:
        """After a hard stop, in the main thread: raise JobInterrupt when ``frame`` is in
        the code of a running job; look again in RETRY_S while any job runs."""
        launched = self.worker.slots.launched()
        if not launched:
            return
        if signal.SIGALRM not in self._previous:
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        current = gevent.getcurrent()
        if any(rj.greenlet is current and rj.phase == Phase.RUNNING for rj in launched) and in_task_code(frame):
            raise JobInterrupt("worker shutting down: interrupted by a second signal")
