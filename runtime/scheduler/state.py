"""The Redis side of schedules: firing (fire.lua), the schedulers' sync, and what
``runtime schedules`` reads and changes (pause, resume, run-now).

Keys (runtime.broker.keys): ``{p}:sc:{queue}:{name}`` holds a schedule's state in the hash
slot of its queue, so that fire.lua writes it with the queue's keys (one slot, on a Redis
Cluster too): its definition (``def``, JSON, as the last scheduler to start with it had it,
at ``def_at``; ``removed_at`` when a worker started without it), ``last_fire`` (ms),
``last_job``, ``last_status``, ``fired_at`` (server time of the last fire, s), ``paused``
("1") and counts of fire times not run (``count_missed``, ``count_overlap``,
``count_paused``). ``{p}:schedules:queue`` maps each name to the queue its state is kept
under, for the readers by name; ``{p}:schedulers`` scores each worker running the
scheduler by its last sync (server time, s), and ``{p}:schedulers:runs`` holds the names
of the schedules each of them runs (JSON), so that a schedule no live scheduler runs is
known (removed from the code, or its workers down).

A schedule whose queue changes (a worker starts with a definition naming another queue)
has its state taken along when that worker registers it (:meth:`ScheduleState.register`):
the old state is first marked ``moved_to`` the new queue (fire.lua then fires nothing
there: 'moved', and schedulers still on the old definition sync and adopt the new one),
then read and written under the new queue (rehome.lua), so its last fire is kept and no
fire time is queued twice. The old key stays, marked, for schedulers not yet following.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..broker.broker import RedisBroker
from ..errors import ScheduleNotFound
from ..job import encode_params
from ..schedule import Plan, Schedule
from ..status import Status

#: A scheduler not synced for this many seconds is forgotten by the next one to start.
FORGET_SCHEDULER_S = 86_400.0
#: Most ``moved_to`` marks a reader follows from the queue {p}:schedules:queue names.
MAX_MOVES = 3


@dataclass
class Synced:
    """A schedule's state as a sync reads it: last_fire (ms), its definition as last
    published (JSON) and when (def_at, ms), when a newer worker found it removed from
    the code (removed_at, ms; 0: not), and the queue its state moved to ("": it did not)."""

    last_fire: int
    definition: str
    def_at: int
    removed_at: int
    moved_to: str = ""


@dataclass
class Fired:
    """What fire.lua did: the schedule's last fire time after the call (ms), the server
    time it read (ms), the outcome of each fire time sent ('queued', 'missed', 'overlap',
    'paused', 'done', 'early': not come yet on the server clock, left; 'stale': the plan
    dropped fire times and another scheduler fired some of them since its ``after_ms``, so
    nothing was done: plan again from ``last_fire``; 'moved': the schedule's state moved to
    another queue, nothing was done: sync and follow it; or 'absent': no state, not
    registered, nothing was done: :meth:`ScheduleState.register` it), and how many dropped
    fire times it counted."""

    last_fire: int
    server_ms: int
    outcomes: list[str]
    dropped: int = 0


class ScheduleState:
    """Schedules in Redis, through ``broker``."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.keys = broker.keys

    def fire(self, schedule: Schedule, plan: Plan | Sequence[tuple[int, bool]]) -> Fired:
        """Queue or record the fire times of ``plan`` (runtime.schedule.Schedule.plan; or
        its fires alone: none dropped), in one script call in the slot of the schedule's
        queue (named in {p}:queues in the same round trip, once per process). Raises redis
        errors."""
        if not isinstance(plan, Plan):
            plan = Plan(0, list(plan))
        k, q = self.keys, schedule.queue
        ready, sched, wake, _ = k.queue_keys(q)
        keys = [k.schedule(q, schedule.name), ready, sched, wake, k.status(q, Status.QUEUED)]
        args: list[Any] = [q, schedule.name, schedule.path, encode_params(schedule.params, 1 << 20),
                           schedule.priority, schedule.overlap, len(plan.fires), plan.dropped, plan.after_ms]
        for t, run in plan.fires:
            job_id = f"{q}:{schedule.job_id(t)}"  # a job id names its queue (runtime.job)
            keys.append(k.job(job_id))
            args += (t, job_id, "1" if run else "0")
        reply = self.broker.script("fire", keys, args, queue=q)
        return Fired(int(reply[0]), int(reply[1]), [str(r) for r in reply[3:]], int(reply[2]))

    def register(self, worker_id: str, schedules: Sequence[Schedule], pipe: Any = None,
                 publish: bool = False) -> None:
        """Register ``schedules`` under their queues: take the state of each whose queue
        changed to its new queue (:meth:`_rehome`), start the clocks of new ones (last_fire
        = now: a new schedule has no missed runs) and name their queues in
        {p}:schedules:queue. With ``publish``, also publish the definitions (``def``,
        ``def_at``: this worker's clock, ms). The writes go in ``pipe`` when given (the
        caller executes it), else in a round trip of their own."""
        now_ms = int(time.time() * 1000)
        if schedules:
            was = self.redis.hmget(self.keys.schedules, [s.name for s in schedules])
            for s, old in zip(schedules, was):
                if old is not None and str(old) != s.queue:
                    self._rehome(worker_id, s, str(old), now_ms, publish)
        run = pipe is None
        pipe = self.redis.pipeline(transaction=False) if run else pipe
        for s in schedules:
            key = self.keys.schedule(s.queue, s.name)
            pipe.hsetnx(key, "last_fire", now_ms)
            if publish:
                pipe.hset(key, mapping={"def": s.to_json(), "def_at": now_ms, "synced_by": worker_id})
                pipe.hdel(key, "removed_at")
        if schedules:
            pipe.hset(self.keys.schedules, mapping={s.name: s.queue for s in schedules})
        if run:
            pipe.execute()

    def _rehome(self, worker_id: str, s: Schedule, old: str, now_ms: int, publish: bool) -> None:
        """Take schedule ``s``'s state from queue ``old`` to its queue: mark the old one
        ``moved_to`` (no fire there after this; with ``publish``, with the new definition,
        for the schedulers still on the old one to adopt), read it, and write it under the
        new queue unless a state in use is there (rehome.lua). Two round trips."""
        key = self.keys.schedule(old, s.name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "moved_to", s.queue)
        if publish:
            pipe.hset(key, mapping={"def": s.to_json(), "def_at": now_ms, "synced_by": worker_id})
        pipe.hgetall(key)
        state = pipe.execute()[-1]
        fields = [x for pair in state.items() for x in pair]
        self.broker.script("rehome", [self.keys.schedule(s.queue, s.name)], fields)

    def sync(self, worker_id: str, schedules: Sequence[Schedule], first: bool) -> tuple[float, dict[str, Synced]]:
        """A scheduler's sync: mark ``worker_id`` as running the scheduler now; on the
        ``first`` sync also :meth:`register` the schedules and publish their definitions.
        Two round trips: TIME (alone: a cluster pipeline refuses a command without a key),
        then the rest (more on the first: one, and two per schedule whose queue changed).

        Returns (server time, s, read before the rest; {name: what Redis holds of it,
        :class:`Synced`})."""
        secs, micros = self.redis.time()
        server = secs + micros / 1e6
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.schedulers, {worker_id: server})
        if first:
            self.register(worker_id, schedules, pipe, publish=True)
            pipe.hset(self.keys.scheduler_runs, worker_id, json.dumps(sorted(s.name for s in schedules)))
        for s in schedules:
            pipe.hmget(self.keys.schedule(s.queue, s.name), "last_fire", "def", "def_at", "removed_at", "moved_to")
        replies = pipe.execute()
        found = replies[len(replies) - len(schedules):]
        return server, {s.name: Synced(int(f[0] or 0), f[1] or "", int(f[2] or 0), int(f[3] or 0), f[4] or "")
                        for s, f in zip(schedules, found)}

    def mark_removed(self, mine: Sequence[str], modules: Sequence[str]) -> list[str]:
        """Mark removed (``removed_at``, this clock, ms) the schedules whose task is in one
        of ``modules`` (the modules a starting worker imported) but which that worker does
        not declare (``mine``): they were removed from the code it runs. Returns their
        names."""
        served, have = set(modules), set(mine)
        gone = [(name, q) for name, (q, h) in self.states().items() if name not in have and not h.get("removed_at")
                and json.loads(h.get("def") or "{}").get("path", "").rpartition(".")[0] in served]
        now_ms = int(time.time() * 1000)
        for name, q in gone:
            self.redis.hset(self.keys.schedule(q, name), "removed_at", now_ms)
        return [name for name, _ in gone]

    def runs(self, worker_id: str, names: Sequence[str]) -> None:
        """Record that ``worker_id``'s scheduler now runs the schedules ``names``."""
        self.redis.hset(self.keys.scheduler_runs, worker_id, json.dumps(sorted(names)))

    def prune(self, now: float) -> None:
        """Forget the schedulers not synced for :data:`FORGET_SCHEDULER_S` before ``now``
        (server s): workers killed without leaving, long gone."""
        old = [str(w) for w in self.redis.zrangebyscore(self.keys.schedulers, "-inf", now - FORGET_SCHEDULER_S)]
        if old:
            self.redis.zrem(self.keys.schedulers, *old)
            self.redis.hdel(self.keys.scheduler_runs, *old)

    def leave(self, worker_id: str) -> None:
        """``worker_id`` stops running the scheduler."""
        self.redis.zrem(self.keys.schedulers, worker_id)
        self.redis.hdel(self.keys.scheduler_runs, worker_id)

    def scheduler_runs(self) -> dict[str, list[str] | None]:
        """Worker id -> names of the schedules its scheduler runs (None: not recorded)."""
        out: dict[str, list[str] | None] = {}
        for w, raw in self.redis.hgetall(self.keys.scheduler_runs).items():
            try:
                names = json.loads(raw)
            except ValueError:
                names = None
            out[str(w)] = [str(n) for n in names] if isinstance(names, list) else None
        return out

    def schedulers(self) -> dict[str, float]:
        """Workers that ran the scheduler: id -> time of their last sync (server, s)."""
        pairs: list[Any] = self.redis.zrange(self.keys.schedulers, 0, -1, withscores=True)
        return {str(w): float(t) for w, t in pairs}

    def states(self, names: Sequence[str] | None = None) -> dict[str, tuple[str, dict[str, str]]]:
        """Name -> (the queue its state is kept under, the state hash) of schedules ``names``
        (None: every one in {p}:schedules:queue), sorted; a name with no state is left out.
        A state marked ``moved_to`` another queue is followed there (up to
        :data:`MAX_MOVES` times): a worker may have moved it after another named the old
        queue."""
        where = {str(n): str(q) for n, q in self.redis.hgetall(self.keys.schedules).items()}
        todo = {n: where[n] for n in sorted(where if names is None else set(names) & set(where))}
        out: dict[str, tuple[str, dict[str, str]]] = {}
        for _ in range(MAX_MOVES + 1):
            if not todo:
                break
            pipe = self.redis.pipeline(transaction=False)
            for n, q in todo.items():
                pipe.hgetall(self.keys.schedule(q, n))
            again = {}
            for (n, q), h in zip(todo.items(), pipe.execute()):
                if h:
                    out[n] = (q, dict(h))
                if h.get("moved_to") and h["moved_to"] != q:
                    again[n] = str(h["moved_to"])
            todo = again
        return dict(sorted(out.items()))

    def read(self) -> dict[str, dict[str, str]]:
        """Every schedule's state hash, by name (sorted; :meth:`states`)."""
        return {n: h for n, (_, h) in self.states().items()}

    def _existing(self, name: str) -> str:
        """The key of schedule ``name``'s state. Raises ScheduleNotFound."""
        found = self.states([name])
        if name not in found:
            known = ", ".join(sorted(str(n) for n in self.redis.hkeys(self.keys.schedules))) or "none"
            raise ScheduleNotFound(f"no schedule {name!r} (known: {known})")
        return self.keys.schedule(found[name][0], name)

    def pause(self, name: str, paused: bool = True) -> None:
        """Pause (or resume) schedule ``name``: while paused, its fire times pass without a
        job (recorded as 'paused', not caught up on resume). Raises ScheduleNotFound for an
        unknown name."""
        self.redis.hset(self._existing(name), "paused", "1" if paused else "0")

    def definition(self, name: str) -> dict[str, Any]:
        """Schedule ``name``'s definition as its schedulers published it. Raises
        ScheduleNotFound for an unknown name."""
        raw = self.redis.hget(self._existing(name), "def")
        if not raw:
            raise ScheduleNotFound(f"schedule {name!r} has no definition yet (no scheduler has run it)")
        return dict(json.loads(raw))

    def ran_now(self, name: str, job_id: str) -> None:
        """Record that ``job_id`` was queued for ``name`` by run-now (its last job). Raises
        ScheduleNotFound for an unknown name."""
        self.redis.hset(self._existing(name), mapping={"last_job": job_id, "last_run_now": job_id})

    def forget(self, name: str) -> None:
        """Delete schedule ``name``'s state (definition, last fire, counts). Raises
        ScheduleNotFound for an unknown name; the caller checks that no scheduler runs it
        (runtime.scheduler.report.forget)."""
        self.redis.delete(self._existing(name))
        self.redis.hdel(self.keys.schedules, name)
