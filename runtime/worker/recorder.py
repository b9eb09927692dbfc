"""Recording what jobs ended with: outcomes written to Redis in batches, none lost.

An ended attempt becomes an :class:`~runtime.messages.Outcome` (status, note, and the
fields to store: result or error, report, artifacts, logs, progress, times), kept here
until Redis holds it. The claim loop takes what ended with its next claim, in the same
round trip; when it does not claim (it waits for work, or stops), a flusher greenlet
writes them, one round trip for all that ended meanwhile. An outcome Redis refuses for
what it holds is recorded without its data; one Redis cannot take for now (a lost
connection, a read-only replica) waits and is sent again, whole.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock

from ..backoff import Backoff
from ..broker import RedisBroker
from ..execution import AttemptResult, interrupted, release
from ..hashfields import report_fields
from ..job import dumps, utf8_safe
from ..messages import NOT_COMPACT, Outcome, history_members
from ..settings import Settings
from ..status import Status
from .link import RedisLink
from .slots import RunningJob, Slots
from .state import Phase, WorkerState

log = logging.getLogger("runtime.worker")

#: Outcomes written per round trip at most.
FLUSH_BATCH = 500
#: exc_type of an outcome whose own data could not be stored (kept: status and this note).
NOT_STORED = "runtime.OutcomeNotStored"


#: Level of the worker's line for an attempt's end, by status (others: INFO).
_LEVELS = {Status.SUCCESS: logging.DEBUG, Status.FAILED: logging.WARNING, Status.TIMEOUT: logging.WARNING,
           Status.MAXRETRIES: logging.WARNING}


class Host(Protocol):
    """What the recorder needs of its worker."""

    id: str
    settings: Settings
    broker: RedisBroker
    slots: Slots
    mirror: Any
    state: WorkerState
    stopping: bool
    hard: bool
    link: RedisLink


def not_stored_fields(exc: BaseException) -> dict[str, str]:
    """The fields of an outcome whose own data could not be stored (status kept)."""
    return {"exc_type": NOT_STORED, "reason": "not-stored",
            "exc_message": f"the outcome could not be stored: {type(exc).__name__}: {exc}"[:2000]}


def interrupted_before_start(exc: BaseException) -> AttemptResult:
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


class Recorder:
    """The outcomes of one worker's jobs, from their end until Redis holds them."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.outcomes: list[Outcome] = []
        #: jobs this worker ran (started), whatever their status: not those returned unrun
        self.jobs_done = 0
        #: one writer at a time: a batch is in flight until recorded
        self.lock = gevent.lock.Semaphore()
        self._ended = gevent.event.Event()

    def record(self, rj: RunningJob, res: AttemptResult) -> None:
        """``rj`` ended with ``res``: its outcome, with what middleware measured, is kept
        for the next write (once: a second call for the same job does nothing)."""
        if rj.done:
            return
        ctx = rj.ctx
        fields = res.store_fields(rj.claimed.retries)
        level = _LEVELS.get(res.status, logging.INFO)
        if log.isEnabledFor(level):
            self._log_end(rj, res, fields, level)
        release(res.exc)  # formatted and seen by every middleware: free its frames now
        res.exc = None
        fields.update(ctx.progress_fields())
        if rj.timeout_s:  # the task's timeout, else the worker's default: the one it ran under
            fields["timeout_s"] = repr(rj.timeout_s)
        if ctx.logs:
            fields["logs"] = dumps(ctx.logs)
        if ctx.report:
            max_bytes = self.host.settings.max_report_bytes
            fields.update(report_fields(ctx.report, lambda rest: capped_json(rest, max_bytes)))
        if ctx.artifacts:
            fields["artifacts"] = dumps(ctx.artifacts)
        if ctx.meta_changed:
            fields["meta"] = dumps(ctx.meta)
        number = res.delay_s if res.status == Status.RETRY else 0.0
        # a lone surrogate must not stop the flush
        fields = {k: v if v.isascii() else utf8_safe(v) for k, v in fields.items()}
        tail = history_members((ctx.report.get("trace") or {}).get("trace_id"), fields.get("exc_type"),
                               fields.get("exc_message"))
        keep = rj.keep if res.status == Status.SUCCESS else "full"
        if keep == "compact":
            fields = {k: v for k, v in fields.items() if k not in NOT_COMPACT}
        self.append(rj, Outcome(rj.id, rj.claimed.queue, rj.claimed.attempt, res.status, number, res.note, fields,
                                tail, keep))

    def _log_end(self, rj: RunningJob, res: AttemptResult, f: dict[str, str], level: int) -> None:
        """One worker log line for the end of ``rj``'s attempt (``f``: its stored fields),
        with its fields as ``extra`` (runtime.cli.logformat.JOB_FIELDS) for log shippers."""
        c = rj.claimed
        try:
            duration: float | None = round(float(f["ended_at"]) - float(f["started_at"]), 6)
        except (KeyError, ValueError):
            duration = None
        trace_id = (rj.ctx.report.get("trace") or {}).get("trace_id")
        extra = {"job_id": c.id, "task": c.path, "queue": c.queue, "status": res.status.value, "attempt": c.attempt,
                 "duration_s": duration, "trace_id": trace_id, "worker_id": self.host.id,
                 "error_type": f.get("exc_type")}
        took = f" after {duration:.3f} s" if duration is not None else ""
        why = f": {f['exc_type']}: {f.get('exc_message', '')}"[:300] if "exc_type" in f else ""
        then = f" ({res.note})" if res.note else ""
        trace = f" [trace_id={trace_id}]" if trace_id else ""
        log.log(level, "job %s %s %s%s%s%s%s", c.id, c.path, res.status.value, took, why, then, trace, extra=extra)

    def append(self, rj: RunningJob, outcome: Outcome) -> None:
        """``rj`` ended with ``outcome``: written with the next flush or claim round trip."""
        if rj.phase == Phase.RUNNING and rj.unserved is None:  # ran: not returned unrun, nor handed back
            self.jobs_done += 1
        if rj.phase < Phase.DONE:
            rj.phase = Phase.DONE
        self.outcomes.append(outcome)
        self._ended.set()

    def batch(self) -> list[Outcome]:
        """The outcomes to send in the next round trip (call with :attr:`lock` held)."""
        return self.outcomes[:FLUSH_BATCH]

    def recorded(self, batch: list[Outcome], stale: list[str]) -> None:
        """Redis holds ``batch`` (``stale``: ids of attempts superseded, not recorded)."""
        del self.outcomes[:len(batch)]
        for o in batch:
            self.host.slots.forget(o.id)
        if self.host.mirror is not None:
            self.host.mirror.changed(o.id for o in batch if o.id not in stale)
        for job_id in stale:
            log.warning("job %s: this attempt was superseded; its outcome was not recorded", job_id)

    def flush_loop(self) -> None:
        """Record outcomes that the claim loop does not take with its next claim (it is
        blocked waiting for work, or stopping). Runs until killed."""
        while True:
            self._ended.wait()
            self._ended.clear()
            gevent.sleep(0)  # let a claim loop woken by the same job end take them first
            try:
                if self.outcomes:
                    self.flush()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("recording finished jobs failed; trying again")
                self._ended.set()
                gevent.sleep(1.0)

    def flush(self) -> None:
        """Write every outcome kept now (retrying while Redis cannot take them)."""
        with self.lock:
            self._flush_locked()

    def _idle_after(self, batch: list[Outcome]) -> bool:
        """Will the worker be left with nothing to run once ``batch`` is written? Then it
        says so in the same round trip, so the next job is handed to it (its claim loop is
        blocked on its handoff list)."""
        h = self.host
        return (not h.stopping and h.slots.busy == 0 and len(batch) == len(self.outcomes)
                and (h.mirror is None or h.mirror.claim_allowed))

    def _flush_locked(self) -> None:
        h = self.host
        backoff = Backoff(0.1, 5.0)
        while self.outcomes:
            batch = self.batch()
            idle = h.settings.queues if self._idle_after(batch) else ()
            try:
                stale = h.broker.finish(batch, h.id, idle)
            except Exception as exc:  # noqa: BLE001 - one bad outcome must not stop recording
                if not h.link.failed(exc, "recording finished jobs"):
                    self._unstorable(batch, exc)
                    continue
                h.state = WorkerState.DEGRADED
                delay = backoff.next()
                gevent.sleep(delay)
                if h.hard and backoff.at_max:
                    return  # the reaper requeues them once this worker's registry expires
                continue
            h.link.ok("recording finished jobs")
            self.recorded(batch, stale)

    def _unstorable(self, batch: list[Outcome], exc: BaseException) -> None:
        """Redis refused ``batch`` for what it holds (not for being unreachable or busy):
        record it without its data next, or, refused even so, leave it (requeued when
        this worker stops)."""
        if all(o.fields.get("exc_type") == NOT_STORED for o in batch):
            log.error("dropping %d outcomes that cannot be stored (%s); their jobs are requeued "
                      "when this worker stops", len(batch), exc)
            del self.outcomes[:len(batch)]
            return
        log.error("could not record %d finished jobs (%s); recording them without their data", len(batch), exc)
        for o in batch:
            o.fields = not_stored_fields(exc)
