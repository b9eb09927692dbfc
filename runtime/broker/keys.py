"""Every Redis key name runtime uses, in one place: :data:`SHAPES`.

The Python methods of :class:`Keys` and the Lua key builders of the scripts
(:func:`lua_builders`, pasted into ``_lib.lua`` where it says ``--@KEY_BUILDERS@--``) are
both made from :data:`SHAPES`, so a shape is written once.

| key                          | type | holds                                             |
|------------------------------|------|---------------------------------------------------|
| {p}:j:{id}                   | hash | the job document (fields of runtime.job.Job; its  |
|                              |      | status history in field `history`: JSON objects,  |
|                              |      | comma-separated, appended by the scripts)         |
| {p}:n:{id}                   | set  | notify lists of clients waiting for the job       |
| {p}:q:{queue}                | zset | ready jobs; score = -priority*1e13 + due ms       |
| {p}:s:{queue}                | zset | delayed / retrying jobs; score = due ms           |
| {p}:wake:{queue}             | list | at most one wake-up token for blocked workers     |
| {p}:idle:{queue}             | zset | idle workers blocked on their jobs list           |
| {p}:inflight                 | zset | claimed jobs; score = claim deadline ms           |
| {p}:queues                   | set  | names of queues ever used                         |
| {p}:st:{status}              | zset | jobs by status; score = time of the change (s)    |
| {p}:workers                  | set  | ids of registered workers and supervisors         |
| {p}:events                   | list | recycle and kill events (JSON), newest first      |
| {p}:dropped                  | hash | ready key -> queue entries dropped: no document   |
| {p}:w:{worker}               | hash | registry entry (expires: worker_ttl_s)            |
| {p}:w:{worker}:running       | set  | ids of the jobs that worker is running            |
| {p}:w:{worker}:abort         | set  | ids to abort, read by that worker's heartbeat     |
| {p}:w:{worker}:jobs          | list | jobs claimed for an idle worker by enqueue.lua    |
| {p}:wait:{token}             | list | a client's notify list (``wait()``), expiring     |
| {p}:mongo:{what}             | str  | MongoDB store: synced, adopt_after, lock (sweep); |
|                              |      | deployment (the id owning the job collection)     |
| {p}:mongo:pending            | set  | ids whose copy to MongoDB producers handed over   |
| {p}:u:{key}                  | str  | the job id holding a unique key (expires: window) |
| {p}:sc:{name}                | hash | a schedule: definition, last fire, paused, counts |
| {p}:schedules                | set  | names of the schedules schedulers have run        |
| {p}:schedulers               | zset | workers running the scheduler; score = last tick  |
| {p}:schedulers:runs          | hash | worker -> the names of the schedules it runs (JSON)|
| {p}:cap:{name}               | set  | jobs holding a slot of a concurrency cap          |
| {p}:rate:{name}              | zset | a rate limit's window: job id -> start ms         |
| {p}:park:{name}              | zset | jobs over their cap, out of their queue; score =  |
|                              |      | their ready score (runtime.caps)                  |
| {p}:parked                   | set  | names of caps with parked jobs                    |
| {p}:caps                     | set  | names of the caps claims have seen                |
| {p}:paused                   | set  | names of paused queues (workers claim none of     |
|                              |      | their jobs; read with each heartbeat)             |
| {p}:op:{id}                  | hash | a dashboard bulk action: filter, counts, state    |
| {p}:ops                      | list | ids of recent bulk actions, newest first          |
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..status import Status

#: key kind -> shape after ``{prefix}:``; ``{name}`` is the builder's one argument
SHAPES: dict[str, str] = {
    "job": "j:{id}",
    "notify": "n:{id}",
    "ready": "q:{queue}",
    "scheduled": "s:{queue}",
    "wake": "wake:{queue}",
    "idle": "idle:{queue}",
    "inflight": "inflight",
    "queues": "queues",
    "status": "st:{status}",
    "workers": "workers",
    "events": "events",
    "dropped": "dropped",
    "worker": "w:{worker}",
    "running": "w:{worker}:running",
    "aborts": "w:{worker}:abort",
    "handoff": "w:{worker}:jobs",
    "waiter": "wait:{token}",
    "mongo": "mongo:{what}",
    "unique": "u:{key}",
    "schedule": "sc:{name}",
    "schedules": "schedules",
    "schedulers": "schedulers",
    "scheduler_runs": "schedulers:runs",
    "cap": "cap:{name}",
    "rate": "rate:{name}",
    "park": "park:{name}",
    "parked": "parked",
    "caps": "caps",
    "paused": "paused",
    "operation": "op:{id}",
    "operations": "ops",
}

_ARG = re.compile(r"\{(\w+)\}")


def _parts(shape: str) -> tuple[str, str]:
    """(head, tail) around a shape's one argument (tail "" when there is none)."""
    m = _ARG.search(shape)
    return (shape, "") if m is None else (shape[:m.start()], shape[m.end():])


class Keys:
    """Key names under one prefix. The queue and status keys are memoized (the worker asks
    for the same ones on every claim)."""

    __slots__ = ("prefix", "_p")

    def __init__(self, prefix: str = "rt") -> None:
        self.prefix = prefix
        self._p = {kind: (f"{prefix}:{head}", tail) for kind, (head, tail) in
                   ((k, _parts(s)) for k, s in SHAPES.items())}

    def _key(self, kind: str, arg: str = "") -> str:
        head, tail = self._p[kind]
        return head + arg + tail

    def job(self, job_id: str) -> str:
        return self._key("job", job_id)

    def notify(self, job_id: str) -> str:
        return self._key("notify", job_id)

    def ready(self, queue: str) -> str:
        return self._key("ready", queue)

    def scheduled(self, queue: str) -> str:
        return self._key("scheduled", queue)

    def wake(self, queue: str) -> str:
        return self._key("wake", queue)

    def idle(self, queue: str) -> str:
        return self._key("idle", queue)

    @property
    def inflight(self) -> str:
        return self._key("inflight")

    @property
    def queues(self) -> str:
        return self._key("queues")

    def status(self, status: str) -> str:
        return self._key("status", status)

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def dropped(self) -> str:
        return self._key("dropped")

    def worker(self, worker_id: str) -> str:
        return self._key("worker", worker_id)

    def running(self, worker_id: str) -> str:
        return self._key("running", worker_id)

    def aborts(self, worker_id: str) -> str:
        return self._key("aborts", worker_id)

    def handoff(self, worker_id: str) -> str:
        return self._key("handoff", worker_id)

    def waiter(self, token: str) -> str:
        return self._key("waiter", token)

    def mongo(self, what: str) -> str:
        return self._key("mongo", what)

    def unique(self, key: str) -> str:
        return self._key("unique", key)

    def schedule(self, name: str) -> str:
        return self._key("schedule", name)

    @property
    def schedules(self) -> str:
        return self._key("schedules")

    @property
    def schedulers(self) -> str:
        return self._key("schedulers")

    @property
    def scheduler_runs(self) -> str:
        return self._key("scheduler_runs")

    def cap(self, name: str) -> str:
        return self._key("cap", name)

    def rate(self, name: str) -> str:
        return self._key("rate", name)

    def park(self, name: str) -> str:
        return self._key("park", name)

    @property
    def parked(self) -> str:
        return self._key("parked")

    @property
    def caps(self) -> str:
        return self._key("caps")

    @property
    def paused(self) -> str:
        return self._key("paused")

    def operation(self, op_id: str) -> str:
        return self._key("operation", op_id)

    @property
    def operations(self) -> str:
        return self._key("operations")

    def queue_keys(self, queue: str) -> tuple[str, str, str, str]:
        """(ready, scheduled, wake, idle) of ``queue``, the block the scripts take per queue."""
        return _queue_keys(self.prefix, queue)

    def status_keys(self) -> tuple[str, ...]:
        """The status indexes in :data:`STATUS_ORDER`, the block the scripts take."""
        return _status_keys(self.prefix)


#: Order of the status-index block passed to the scripts (``st_key(status)`` in Lua).
STATUS_ORDER: tuple[Status, ...] = tuple(Status)


@lru_cache(maxsize=4096)
def _queue_keys(prefix: str, queue: str) -> tuple[str, str, str, str]:
    k = Keys(prefix)
    return k.ready(queue), k.scheduled(queue), k.wake(queue), k.idle(queue)


@lru_cache(maxsize=64)
def _status_keys(prefix: str) -> tuple[str, ...]:
    k = Keys(prefix)
    return tuple(k.status(s.value) for s in STATUS_ORDER)


def lua_builders() -> str:
    """Lua functions ``key_<kind>(arg)`` for every shape, over the script's prefix ``P``,
    each a piece of the lib of its own (``--- key_<kind>``)."""
    out = []
    for kind, shape in SHAPES.items():
        head, tail = _parts(shape)
        m = _ARG.search(shape)
        arg = m.group(1) if m else ""
        body = f"P .. ':{head}'" + (f" .. {arg}" if arg else "") + (f" .. '{tail}'" if tail else "")
        out.append(f"--- key_{kind}\nlocal function key_{kind}({arg}) return {body} end")
    return "\n".join(out)
