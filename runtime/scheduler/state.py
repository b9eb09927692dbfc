"""The Redis side of schedules: firing (fire.lua), the schedulers' sync, and what
``runtime schedules`` reads and changes (pause, resume, run-now).

Keys (runtime.broker.keys): ``{p}:sc:{name}`` holds a schedule's definition (``def``, JSON,
as the last scheduler to start with it had it, at ``def_at``; ``removed_at`` when a
worker started without it), ``last_fire`` (ms), ``last_job``,
``last_status``, ``fired_at`` (server time of the last fire, s), ``paused`` ("1") and
counts of fire times not run (``count_missed``, ``count_overlap``, ``count_paused``);
``{p}:schedules`` names them; ``{p}:schedulers`` scores each worker running the
scheduler by its last sync (server time, s), and ``{p}:schedulers:runs`` holds the names
of the schedules each of them runs (JSON), so that a schedule no live scheduler runs is
known (removed from the code, or its workers down).
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


@dataclass
class Synced:
    """A schedule's state as a sync reads it: last_fire (ms), its definition as last
    published (JSON) and when (def_at, ms), and when a newer worker found it removed from
    the code (removed_at, ms; 0: not)."""

    last_fire: int
    definition: str
    def_at: int
    removed_at: int


@dataclass
class Fired:
    """What fire.lua did: the schedule's last fire time after the call (ms), the server
    time it read (ms), the outcome of each fire time sent ('queued', 'missed', 'overlap',
    'paused', 'done', 'early': not come yet on the server clock, left; or 'stale': the
    plan dropped fire times and another scheduler fired some of them since its
    ``after_ms``, so nothing was done: plan again from ``last_fire``), and how many dropped
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
        its fires alone: none dropped), in one script call. Raises redis errors."""
        if not isinstance(plan, Plan):
            plan = Plan(0, list(plan))
        k = self.keys
        ready, sched, wake, _ = k.queue_keys(schedule.queue)
        keys = [k.schedule(schedule.name), ready, sched, wake, k.queues, k.status(schedule.queue, Status.QUEUED)]
        args: list[Any] = [schedule.queue, schedule.path, encode_params(schedule.params, 1 << 20),
                           schedule.priority, schedule.overlap, len(plan.fires), plan.dropped, plan.after_ms]
        for t, run in plan.fires:
            job_id = f"{schedule.queue}:{schedule.job_id(t)}"  # a job id names its queue (runtime.job)
            keys.append(k.job(job_id))
            args += (t, job_id, "1" if run else "0")
        reply = self.broker.script("fire", keys, args)
        return Fired(int(reply[0]), int(reply[1]), [str(r) for r in reply[3:]], int(reply[2]))

    def sync(self, worker_id: str, schedules: Sequence[Schedule], first: bool) -> tuple[float, dict[str, Synced]]:
        """A scheduler's sync: mark ``worker_id`` as running the scheduler now; on the
        ``first`` sync also publish the definitions (``def``, ``def_at``: this worker's
        clock, ms) and start the new schedules' clocks (last_fire = now: a new schedule has
        no missed runs). One round trip.

        Returns (server time, s; {name: what Redis holds of it, :class:`Synced`})."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        now_ms = int(time.time() * 1000)
        if first:
            for s in schedules:
                key = self.keys.schedule(s.name)
                pipe.hsetnx(key, "last_fire", now_ms)
                pipe.hset(key, mapping={"def": s.to_json(), "def_at": now_ms, "synced_by": worker_id})
                pipe.hdel(key, "removed_at")
            if schedules:
                pipe.sadd(self.keys.schedules, *(s.name for s in schedules))
            pipe.hset(self.keys.scheduler_runs, worker_id, json.dumps(sorted(s.name for s in schedules)))
        for s in schedules:
            pipe.hmget(self.keys.schedule(s.name), "last_fire", "def", "def_at", "removed_at")
        replies = pipe.execute()
        server = float(replies[0][0]) + float(replies[0][1]) / 1e6
        self.redis.zadd(self.keys.schedulers, {worker_id: server})
        found = replies[len(replies) - len(schedules):]
        return server, {s.name: Synced(int(f[0] or 0), f[1] or "", int(f[2] or 0), int(f[3] or 0))
                        for s, f in zip(schedules, found)}

    def mark_removed(self, mine: Sequence[str], modules: Sequence[str]) -> list[str]:
        """Mark removed (``removed_at``, this clock, ms) the schedules whose task is in one
        of ``modules`` (the modules a starting worker imported) but which that worker does
        not declare (``mine``): they were removed from the code it runs. Returns their
        names."""
        served, have = set(modules), set(mine)
        gone = [name for name, h in self.read().items() if name not in have and not h.get("removed_at")
                and json.loads(h.get("def") or "{}").get("path", "").rpartition(".")[0] in served]
        now_ms = int(time.time() * 1000)
        for name in gone:
            self.redis.hset(self.keys.schedule(name), "removed_at", now_ms)
        return gone

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

    def read(self) -> dict[str, dict[str, str]]:
        """Every schedule's state hash, by name (sorted)."""
        names = sorted(str(n) for n in self.redis.smembers(self.keys.schedules))
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(self.keys.schedule(n))
        return {n: dict(h) for n, h in zip(names, pipe.execute()) if h}

    def _existing(self, name: str) -> str:
        key = self.keys.schedule(name)
        if not self.redis.exists(key):
            known = ", ".join(sorted(str(n) for n in self.redis.smembers(self.keys.schedules))) or "none"
            raise ScheduleNotFound(f"no schedule {name!r} (known: {known})")
        return key

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
        """Record that ``job_id`` was queued for ``name`` by run-now (its last job)."""
        self.redis.hset(self.keys.schedule(name), mapping={"last_job": job_id, "last_run_now": job_id})

    def forget(self, name: str) -> None:
        """Delete schedule ``name``'s state (definition, last fire, counts). Raises
        ScheduleNotFound for an unknown name; the caller checks that no scheduler runs it
        (runtime.scheduler.report.forget)."""
        self.redis.delete(self._existing(name))
        self.redis.srem(self.keys.schedules, name)
