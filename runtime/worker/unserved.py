"""Jobs of tasks a worker does not serve: handed back to their queue, never failed at once.

A worker serves the tasks of its ``task_modules`` as its own code has them. A job whose
task lies outside them, or whose module or attribute its code lacks (in a rolling deploy,
an old worker sees the jobs of new tasks), is handed back for a worker that serves it:
status ``retry`` with reason ``unserved``, through the retry path (``finish.lua``
schedules it), not counted as a retry (``retries`` and the task's ``max_retries`` are
untouched; the attempt number, a fencing counter, still advances). The delay grows from
FIRST_DELAY_S to MAX_DELAY_S, so a worker that is alone on the queue does not spin on it.
Why it waits is in the job's ``meta["unserved"]`` (shown by ``runtime job``) and in the
history note. Once ``unserved_timeout_s`` passed since the first hand-back, the next
worker that claims it and does not serve it ends it ``failed`` with reason ``unserved``
(TaskNotServed); that outcome drops ``meta["unserved"]``, so a requeue starts afresh.
No middleware runs for a handed-back job (no span, no Sentry event, no metrics).
"""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol

from ..broker import RedisBroker
from ..errors import BadDocument, TaskError, TaskNotServed
from ..execution import AttemptResult
from ..job import dumps
from ..messages import Claimed
from ..resets import on_reset
from ..settings import Settings
from ..status import Status
from ..tasks import resolve

log = logging.getLogger("runtime.worker")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0
#: A hand-back's due time may be recorded this much later than it was decided (the
#: recorder batches, Redis may be away for a while): a claim due within it continues the
#: wait the hand-back started, an earlier or later one (a requeue) starts a new one.
RECORDING_LAG_S = 60.0

#: (worker id, task path) already logged: one warning per task and worker
_logged: set[tuple[str, str]] = set()


@on_reset
def forget_logged() -> None:
    """Warn again about tasks already warned about."""
    _logged.clear()


def task_timeout(c: Claimed, task_modules: tuple[str, ...],
                 default_s: float) -> tuple[float | None, TaskError | None, str]:
    """The timeout of claimed job ``c``'s task (TaskSpec.limit: ``default_s`` when it declares
    none, None for no timeout); why this worker does not run it: its document cannot be
    read (BadDocument), or it does not serve the task (a TaskError with ``elsewhere``),
    else None; and what Redis keeps of it after a success (TaskSpec.keep).
    Any other error is left to run_attempt, which reports it as the job's failure."""
    if c.problem:
        return default_s, BadDocument(f"job {c.id}: its document in Redis cannot be read: {c.problem}"), "full"
    path = c.path
    try:
        spec = resolve(path, task_modules)
        return spec.limit(default_s), None, spec.keep
    except TaskError as exc:
        return default_s, exc if exc.elsewhere else None, "full"
    except Exception:  # noqa: BLE001 - reported by run_attempt
        return default_s, None, "full"


def _continued(c: Claimed, info: Any) -> bool:
    """Does this claim follow the hand-back ``info`` describes, with nothing between?"""
    try:
        return (int(info["attempt"]) + 1 == c.attempt
                and -0.001 <= c.due_at - float(info["due_min"]) <= RECORDING_LAG_S)
    except (KeyError, TypeError, ValueError):
        return False


def unserved_result(c: Claimed, exc: TaskError, worker_id: str, timeout_s: float) -> AttemptResult:
    """How claimed job ``c`` ends on a worker that does not serve its task (``exc`` says
    why: TaskNotFound or TaskNotAllowed with ``elsewhere``): handed back with a delay, or
    failed (reason unserved) once ``timeout_s`` seconds passed since the first hand-back.
    Times are the claim's (Redis clock). A job whose document cannot be read (BadDocument)
    fails at once, reason bad-document."""
    if isinstance(exc, BadDocument):
        log.error("%s; it fails (reason bad-document)", exc)
        return AttemptResult(Status.FAILED, exc=exc, reason="bad-document", note="bad document")
    info = c.meta.get("unserved")
    since, count = c.started_at, 0
    if isinstance(info, dict) and _continued(c, info):
        since, count = float(info.get("since", since)), int(info.get("count", 0))
    meta = {k: v for k, v in c.meta.items() if k != "unserved"}
    why = str(exc)
    left = since + timeout_s - c.started_at
    if left <= 0:
        final = TaskNotServed(f"no worker served task {c.path!r} within {timeout_s:g} s (unserved_timeout_s); "
                              f"the last one to claim it, {worker_id}, said: {why}")
        return AttemptResult(Status.FAILED, exc=final, reason="unserved", fields={"meta": dumps(meta)},
                             note=f"not served for {c.started_at - since:.0f} s")
    if (worker_id, c.path) not in _logged and len(_logged) < 10_000:
        _logged.add((worker_id, c.path))
        log.warning("jobs of %s go back to their queue for a worker that serves it (for up to %g s): %s",
                    c.path, timeout_s, why)
    delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(count, 16)) * random.uniform(0.5, 1.0)
    delay = min(delay, left + 0.001)  # the claim after the deadline ends it, on time
    meta["unserved"] = {"since": since, "until": since + timeout_s, "count": count + 1, "worker": worker_id,
                        "why": why, "attempt": c.attempt, "due_min": c.started_at + delay}
    fields = {"meta": dumps(meta), "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}", "exc_message": why}
    return AttemptResult(Status.RETRY, reason="unserved", delay_s=delay, fields=fields, counted=False,
                         note=f"not served by this worker; back in the queue in {delay:.1f} s")


class HandingBack(Protocol):
    """What :func:`only_handed_back` needs of a worker."""

    broker: RedisBroker
    settings: Settings
    handed_back: set[str]


def only_handed_back(worker: HandingBack) -> bool:
    """Is every delayed job of ``worker``'s queues one it handed back (a task it does not
    serve)? Then ``--burst`` is done: none of them will run here. One round trip, made
    only by a burst worker with nothing else to run."""
    if not worker.handed_back:
        return False
    keys, n = worker.broker.keys, len(worker.handed_back)
    pipe = worker.broker.redis.pipeline(transaction=False)
    for q in worker.settings.queues:
        pipe.zrange(keys.scheduled(q), 0, n)  # n + 1 members: one more than ours says "not only ours"
    delayed = {m if isinstance(m, str) else m.decode() for ids in pipe.execute() for m in ids}
    return delayed <= worker.handed_back
