"""The jobs a worker holds, and its slots: how many run at once, what waits prefetched.

Each job gets a greenlet of its own, as in Celery's gevent pool: a kill or timer a job
leaves aimed at its greenlet, or greenlet-local state it sets, dies with it (long-lived
runner greenlets, ~35 µs a job cheaper here, let both reach the next job). The slots are
counted here rather than by a gevent Pool. Up to ``prefetch`` claimed jobs wait for a
free greenlet and start the moment one frees. A job that must run alone (``exclusive``)
waits until the pool is empty, and nothing starts beside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event

from ..context import JobContext
from ..messages import Claimed
from .state import Phase


@dataclass(eq=False)
class RunningJob:
    """A job this worker claimed and has not yet recorded. ``started_at``: local UNIX s
    when it was claimed; ``timeout_s``: its task's timeout (or the default)."""

    claimed: Claimed
    ctx: JobContext
    timeout_s: float | None
    started_at: float
    exclusive: bool = False  # runs alone: the pool drains before it and refills after
    phase: Phase = Phase.PREFETCHED
    greenlet: Any = None  # its greenlet once launched
    #: why this worker does not serve its task (a TaskError with ``elsewhere``), or None
    unserved: Any = None
    #: what Redis keeps of it after a success (task option ``keep``: runtime.messages.KEEP)
    keep: str = "full"

    @property
    def id(self) -> str:
        return self.claimed.id

    @property
    def path(self) -> str:
        return self.claimed.path

    @property
    def done(self) -> bool:
        """Its outcome is decided (waiting to be recorded, or recorded)."""
        return self.phase >= Phase.DONE


class Slots:
    """``size`` greenlets and up to ``prefetch`` claimed jobs waiting for one; ``run`` is
    the body of a job's greenlet."""

    def __init__(self, size: int, prefetch: int, run: Callable[[RunningJob], None]) -> None:
        self.size = size
        self.prefetch = prefetch
        self._run = run
        #: jobs claimed and not yet recorded, by id
        self.jobs: dict[str, RunningJob] = {}
        #: greenlets taken (launched and not ended)
        self.busy = 0
        #: claimed jobs waiting for a free greenlet, started as soon as one frees
        self.buffer: deque[RunningJob] = deque()
        self._alone = False  # a job that runs alone holds the pool
        self._alone_waiting = 0  # jobs in the buffer that will run alone
        self._batch: list[RunningJob] = []  # the jobs of the last claim
        self.freed = gevent.event.Event()
        #: called with each job just before its greenlet is spawned (runtime.worker.starts)
        self.on_launch: Callable[[RunningJob], None] | None = None

    @property
    def empty(self) -> bool:
        """Nothing runs and nothing waits."""
        return self.busy == 0 and not self.buffer

    def wanted(self, batch: int, budget: int | None) -> int:
        """How many jobs to claim now (0: wait for a greenlet to end): the free greenlets
        plus room in the prefetch buffer, at most ``batch`` and ``budget`` (None: no cap)."""
        free = self.size - self.busy
        want = free + self.prefetch - len(self.buffer)
        if budget is not None:
            want = min(want, budget)
        if self._alone or self._alone_waiting:
            return 0  # draining for, or running, a job that runs alone
        if want <= 0 or (free <= 0 and 2 * len(self.buffer) > self.prefetch):
            return 0  # full, and enough prefetched
        return min(want, batch)

    def hold_batch(self, batch: list[RunningJob]) -> None:
        """:meth:`hold` each job of one claim, in order (:attr:`batch_waiting` follows them)."""
        for rj in batch:
            self.hold(rj)
        self._batch = batch

    @property
    def batch_waiting(self) -> bool:
        """A job of the last :meth:`hold_batch` was launched but has not begun to run."""
        return any(rj.phase == Phase.LAUNCHED for rj in self._batch)

    def hold(self, rj: RunningJob) -> None:
        """Take ``rj`` (just claimed): start it now if it may, else keep it prefetched."""
        self.jobs[rj.id] = rj
        if not self.buffer and self._can_launch(rj):
            self._launch(rj)
        else:
            alone = self._alone or rj.exclusive or self._alone_waiting
            rj.ctx.wait_reason = "exclusive" if alone else "busy"
            self.buffer.append(rj)
            self._alone_waiting += rj.exclusive

    def _can_launch(self, rj: RunningJob) -> bool:
        if self._alone:
            return False
        return self.busy == 0 if rj.exclusive else self.busy < self.size

    def _launch(self, rj: RunningJob) -> None:
        self.busy += 1
        if rj.exclusive:
            self._alone = True
            for held in self.buffer:  # what waits now waits for it
                held.ctx.wait_reason = "exclusive"
        rj.phase = Phase.LAUNCHED
        if self.on_launch is not None:
            self.on_launch(rj)
        rj.greenlet = gevent.spawn(self._run, rj)

    def ended(self, rj: RunningJob, refill: bool = True) -> None:
        """The end of a job's greenlet (in it, or for one killed before it ran): its slot
        frees and, with ``refill``, the next prefetched jobs start."""
        if rj.phase == Phase.ENDED:
            return
        rj.phase = Phase.ENDED
        self.busy -= 1
        if self._alone and self.busy == 0:
            self._alone = False  # the job that ran alone has ended
        while refill and self.buffer and self._can_launch(self.buffer[0]):
            self._launch(self._unbuffered(self.buffer.popleft()))
        self.freed.set()

    def wait_freed(self, timeout_s: float | None = None) -> None:
        """Block (this greenlet) until a greenlet ends, at most ``timeout_s``."""
        self.freed.clear()
        self.freed.wait(timeout_s)

    def unlaunched(self) -> list[RunningJob]:
        """Take every prefetched job out of the buffer (a stop returns them unrun)."""
        out = list(self.buffer)
        self.buffer.clear()
        self._alone_waiting = 0
        return out

    def drop_prefetched(self, rj: RunningJob) -> bool:
        """Take ``rj`` out of the buffer; False when it was not there."""
        try:
            self.buffer.remove(rj)
        except ValueError:
            return False
        self._unbuffered(rj)
        return True

    def _unbuffered(self, rj: RunningJob) -> RunningJob:
        """``rj`` left the buffer: one fewer waiting to run alone if it will."""
        self._alone_waiting -= rj.exclusive
        return rj

    def launched(self) -> list[RunningJob]:
        """The jobs whose greenlets were spawned and whose outcome is not decided."""
        return [rj for rj in self.jobs.values() if not rj.done and rj.greenlet is not None]

    def forget(self, job_id: str) -> None:
        """``job_id``'s outcome is recorded: it is no longer held."""
        self.jobs.pop(job_id, None)

