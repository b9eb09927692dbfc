"""Every Redis key name runtime uses, in one place: :data:`SHAPES`.

The Python methods of :class:`Keys` and the Lua key builders of the scripts
(:func:`lua_builders`, pasted into ``_lib.lua`` where it says ``--@KEY_BUILDERS@--``) are
both made from :data:`SHAPES`, so a shape is written once. A queue's name is written in
braces (``{p}:q:{default}``): a Redis Cluster hash tag, so that every key of a queue lives
in one hash slot (:data:`TAGGED`); so is the queue part of a job id (``{p}:j:{default}:01a2...``).
Deployment-wide keys (the table's rows with neither) are written ``{p}:{{p}}:...``, all in
the slot of the prefix (:func:`deployment_wide`).

| key                          | type | holds                                             |
|------------------------------|------|---------------------------------------------------|
| {p}:j:{q}:{rest}             | hash | the job document (fields of runtime.job.Job; its  |
|                              |      | status history in field `history`: JSON objects,  |
|                              |      | comma-separated, appended by the scripts)         |
| {p}:n:{q}:{rest}             | set  | notify lists of clients waiting for the job       |
| {p}:q:{queue}                | zset | ready jobs; score = -priority*1e13 + due ms       |
| {p}:s:{queue}                | zset | delayed / retrying jobs; score = due ms           |
| {p}:wake:{queue}             | list | at most one wake-up token for blocked workers     |
| {p}:idle:{queue}             | zset | idle workers blocked on their jobs list           |
| {p}:inflight:{queue}         | zset | claimed jobs; score = claim deadline ms           |
| {p}:queues                   | set  | names of queues ever used                         |
| {p}:st:{queue}:{status}      | zset | jobs of a queue by status; score = time of the    |
|                              |      | change (s)                                        |
| {p}:workers                  | set  | ids of registered workers and supervisors         |
| {p}:events                   | list | recycle and kill events (JSON), newest first      |
| {p}:dropped:{queue}          | str  | queue entries dropped: no document                |
| {p}:w:{worker}               | hash | registry entry (expires: worker_ttl_s)            |
| {p}:w:{worker}:running:{q}   | set  | ids of the jobs of queue q that worker is running |
| {p}:w:{worker}:abort:{q}     | set  | ids to abort, read by that worker's heartbeat     |
| {p}:w:{worker}:jobs:{q}      | list | jobs of q claimed for an idle worker (enqueue.lua)|
| {p}:reaping:{worker}         | str  | who takes back the jobs of that dead worker and   |
|                              |      | records its event (expires: Registry.claim_lost)  |
| {p}:wait:{queue}:{token}     | list | a client's notify list (``wait()``) for the jobs  |
|                              |      | of one queue, expiring                            |
| {p}:mongo:{what}             | str  | MongoDB store: synced, adopt_after, lock (sweep); |
|                              |      | deployment (the id owning the job collection)     |
| {p}:mongo:pending            | set  | ids whose copy to MongoDB producers handed over   |
| {p}:u:{queue}:{key}          | str  | the job id holding a unique key (expires: window) |
| {p}:sc:{queue}:{name}        | hash | a schedule of that queue: definition, last fire,  |
|                              |      | paused, counts; moved_to: the queue it moved to   |
|                              |      | (runtime.scheduler.state)                         |
| {p}:schedules:queue          | hash | schedule name -> the queue its state is kept in   |
| {p}:schedulers               | zset | workers running the scheduler; score = last tick  |
| {p}:schedulers:runs          | hash | worker -> the names of the schedules it runs (JSON)|
| {p}:cap:{queue}:{name}       | set  | jobs of the queue holding a slot of a cap         |
| {p}:rate:{queue}:{name}      | zset | a rate limit's window: job id -> start ms         |
| {p}:park:{queue}:{name}      | zset | jobs over their cap, out of their queue; score =  |
|                              |      | their ready score (runtime.caps)                  |
| {p}:parked:{queue}           | set  | names of the queue's caps with parked jobs        |
| {p}:caps:{queue}             | set  | names of the caps claims of the queue have seen   |
| {p}:paused                   | set  | names of paused queues (workers claim none of     |
|                              |      | their jobs; read with each heartbeat)             |
| {p}:moving:{queue}           | zset | jobs of the queue marked moved whose copy in the  |
|                              |      | target queue is not confirmed; score = time (s)   |
|                              |      | (runtime.broker.moves)                            |
| {p}:landed:{queue}           | zset | jobs moved into the queue ("NEW_ID OLD_ID");      |
|                              |      | score = time their copy landed (s): the copy is   |
|                              |      | never made twice (runtime.broker.moves)           |
| {p}:op:{id}                  | hash | a dashboard bulk action: filter, counts, state    |
| {p}:ops                      | list | ids of recent bulk actions, newest first          |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ..watch import tagged_id

#: key kind -> shape after ``{prefix}:``; ``{name}`` is the builder's one argument
SHAPES: dict[str, str] = {
    "job": "j:{id}",
    "notify": "n:{id}",
    "ready": "q:{queue}",
    "scheduled": "s:{queue}",
    "wake": "wake:{queue}",
    "idle": "idle:{queue}",
    "inflight": "inflight:{queue}",
    "queues": "queues",
    "status": "st:{queue}:{status}",
    "workers": "workers",
    "events": "events",
    "dropped": "dropped:{queue}",
    "worker": "w:{worker}",
    "running": "w:{worker}:running:{queue}",
    "aborts": "w:{worker}:abort:{queue}",
    "handoff": "w:{worker}:jobs:{queue}",
    "reaping": "reaping:{worker}",
    "waiter": "wait:{queue}:{token}",
    "mongo": "mongo:{what}",
    "unique": "u:{queue}:{key}",
    "schedule": "sc:{queue}:{name}",
    "schedules": "schedules:queue",
    "schedulers": "schedulers",
    "scheduler_runs": "schedulers:runs",
    "cap": "cap:{queue}:{name}",
    "rate": "rate:{queue}:{name}",
    "park": "park:{queue}:{name}",
    "parked": "parked:{queue}",
    "caps": "caps:{queue}",
    "paused": "paused",
    "moving": "moving:{queue}",
    "landed": "landed:{queue}",
    "operation": "op:{id}",
    "operations": "ops",
}

_ARG = re.compile(r"\{(\w+)\}")
#: Arguments written in braces, a Redis Cluster hash tag: every key of a queue hashes to
#: the slot of its name. A job id (``{queue}:{rest}``, runtime.job.new_job_id) is written
#: ``{queue}:rest``: a job's keys live in the slot of its queue (:func:`tagged_id`).
TAGGED = frozenset({"queue"})
#: Arguments that are job ids (see :data:`TAGGED`).
IDS = frozenset({"id"})


def deployment_wide(shape: str) -> bool:
    """Is a key of ``shape`` deployment-wide (no queue, no job)? Those are written
    ``{p}:{{p}}:...``, in the hash slot of the prefix: a script that touches several of them
    (the registry: an entry and the set of workers) stays in one slot, and a prefix that is
    a hash tag itself (``{rt1}``) keeps every key of the deployment in its slot."""
    return not {"queue", "id"} & set(_ARG.findall(shape))


def _parts(shape: str) -> tuple[list[str], list[str]]:
    """(the literal pieces, the argument names) of a shape: literals[0] arg[0] literals[1]..."""
    pieces = _ARG.split(shape)
    return pieces[::2], pieces[1::2]


class Keys:
    """Key names under one prefix. The queue and status keys are memoized (the worker asks
    for the same ones on every claim)."""

    __slots__ = ("prefix", "_p", "_wide", "_tag")

    def __init__(self, prefix: str = "rt") -> None:
        self.prefix = prefix
        self._p = {kind: _parts(shape) for kind, shape in SHAPES.items()}
        self._wide = {kind: deployment_wide(shape) for kind, shape in SHAPES.items()}
        self._tag = f"{prefix}:{{{prefix}}}:"

    def _key(self, kind: str, *args: str) -> str:
        literals, names = self._p[kind]
        out = [self._tag, literals[0]] if self._wide[kind] else [self.prefix, ":", literals[0]]
        for name, arg, literal in zip(names, args, literals[1:]):
            if name in TAGGED:
                out += ("{", arg, "}", literal)
            else:
                out += (tagged_id(arg) if name in IDS else arg, literal)
        return "".join(out)

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

    def inflight(self, queue: str) -> str:
        return self._key("inflight", queue)

    @property
    def queues(self) -> str:
        return self._key("queues")

    def status(self, queue: str, status: str) -> str:
        return self._key("status", queue, status)

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def events(self) -> str:
        return self._key("events")

    def dropped(self, queue: str) -> str:
        return self._key("dropped", queue)

    def worker(self, worker_id: str) -> str:
        return self._key("worker", worker_id)

    def reaping(self, worker_id: str) -> str:
        return self._key("reaping", worker_id)

    def running(self, worker_id: str, queue: str) -> str:
        return self._key("running", worker_id, queue)

    def aborts(self, worker_id: str, queue: str) -> str:
        return self._key("aborts", worker_id, queue)

    def handoff(self, worker_id: str, queue: str) -> str:
        return self._key("handoff", worker_id, queue)

    def waiter(self, queue: str, token: str) -> str:
        return self._key("waiter", queue, token)

    def mongo(self, what: str) -> str:
        return self._key("mongo", what)

    def unique(self, queue: str, key: str) -> str:
        return self._key("unique", queue, key)

    def schedule(self, queue: str, name: str) -> str:
        """Schedule ``name``'s state, in the slot of its ``queue`` (the one its jobs go to)."""
        return self._key("schedule", queue, name)

    @property
    def schedules(self) -> str:
        return self._key("schedules")

    @property
    def schedulers(self) -> str:
        return self._key("schedulers")

    @property
    def scheduler_runs(self) -> str:
        return self._key("scheduler_runs")

    def cap(self, queue: str, name: str) -> str:
        return self._key("cap", queue, name)

    def rate(self, queue: str, name: str) -> str:
        return self._key("rate", queue, name)

    def park(self, queue: str, name: str) -> str:
        return self._key("park", queue, name)

    def parked(self, queue: str) -> str:
        return self._key("parked", queue)

    def caps(self, queue: str) -> str:
        return self._key("caps", queue)

    @property
    def paused(self) -> str:
        return self._key("paused")

    def moving(self, queue: str) -> str:
        return self._key("moving", queue)

    def landed(self, queue: str) -> str:
        return self._key("landed", queue)

    def operation(self, op_id: str) -> str:
        return self._key("operation", op_id)

    @property
    def operations(self) -> str:
        return self._key("operations")

    def watched(self, worker_id: str, queues: Sequence[str]) -> dict[str, list[str] | list[list[str]]]:
        """The KEYS of a watchdog's keep-alive (runtime.watch) for worker ``worker_id``
        serving ``queues``: ``entry``, those of KEEP (its registry entry, the workers set),
        ``queues``, those of CLAIMS per queue (its running set, the queue's inflight set),
        and ``reaping``, that of CLAIM: each call in one hash slot."""
        return {"entry": [self.worker(worker_id), self.workers], "reaping": [self.reaping(worker_id)],
                "queues": [[self.running(worker_id, q), self.inflight(q)] for q in queues]}

    def queue_keys(self, queue: str) -> tuple[str, str, str, str]:
        """(ready, scheduled, wake, idle) of ``queue``, the block the scripts take per queue."""
        return _queue_keys(self.prefix, queue)


@lru_cache(maxsize=4096)
def _queue_keys(prefix: str, queue: str) -> tuple[str, str, str, str]:
    k = Keys(prefix)
    return k.ready(queue), k.scheduled(queue), k.wake(queue), k.idle(queue)


def lua_builders() -> str:
    """Lua functions ``key_<kind>(args...)`` for every shape, over the script's prefix ``P``,
    each a piece of the lib of its own (``--- key_<kind>``); a queue argument is wrapped in
    braces there too (:data:`TAGGED`)."""
    out = ["""--- tagged_id
-- tagged_id(id): a job id as its keys write it (runtime.broker.keys.tagged_id)
local function tagged_id(id)
  local q, rest = string.match(id, '^([^:]*):(.*)$')
  if q then return '{' .. q .. '}:' .. rest end
  return id
end"""]
    for kind, shape in SHAPES.items():
        literals, names = _parts(shape)
        body = [f"P .. ':{{' .. P .. '}}:{literals[0]}'" if deployment_wide(shape) else f"P .. ':{literals[0]}'"]
        for name, literal in zip(names, literals[1:]):
            body.append(f"'{{' .. {name} .. '}}'" if name in TAGGED else f"tagged_id({name})" if name in IDS
                        else name)
            if literal:
                body.append(f"'{literal}'")
        out.append(f"--- key_{kind}\nlocal function key_{kind}({', '.join(names)}) return {' .. '.join(body)} end")
    return "\n".join(out)
