"""Live state besides the queues: the registry of workers and supervisors, idle workers,
recycle and kill events, and queue depths.

A registry entry is a hash (``{p}:w:{id}``) that expires after ``worker_ttl_s`` unless its
process writes it again (every heartbeat); its id is in ``{p}:workers``. Workers and
supervisors write theirs with :meth:`Registry.write_entry`, the one writer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from ..settings import Settings
from .connection import REDIS_ERRORS, queued, texts
from .keys import Keys
from .scripts import register

log = logging.getLogger("runtime.broker")

#: Events kept in Redis (newest first), for `runtime events`.
MAX_EVENTS = 1000

#: How long a claim on taking back a dead worker's jobs (:meth:`Registry.claim_lost`)
#: holds, seconds: far longer than a take-back takes, so that a reaper that read the
#: registry before the dead worker's entry went finds it claimed; a claimant that died
#: before it was done leaves the worker to another reaper after it.
LOST_CLAIM_S = 60

#: The keys of every event, of every kind: "recycle" (a worker process crossed a limit and
#: is replaced), "kill" (its supervisor killed it over the hard memory limit), "crash" (it
#: exited unasked), "lost" (it stopped heartbeating and its process is gone, seen by a
#: reaper). ``running`` lists the jobs it was running (``{"id", "path"}``), ``requeued``
#: and ``failed`` (worker-lost) count what became of them; a key that does not apply is None.
EVENT_KEYS = ("event", "at", "host", "pid", "worker", "supervisor", "reason", "detail", "rss_bytes",
              "limit_bytes", "jobs_run", "running", "unstarted", "requeued", "failed", "top_growers",
              "alive_s", "malloc_trims", "jobs_since_last_check")


def event_entry(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` in the one shape of :data:`EVENT_KEYS` (lists empty when missing)."""
    out: dict[str, Any] = dict.fromkeys(EVENT_KEYS)
    out.update((k, v) for k, v in event.items() if k in out)
    for k in ("running", "unstarted", "top_growers"):
        out[k] = out[k] or []
    return out


def queue_names(client: redis.Redis, keys: Keys) -> list[str]:
    """Every queue ever used (``{p}:queues``: enqueue, adopt and move name them), sorted:
    the readers of per-queue keys (status indexes, claims, caps) walk it."""
    return sorted(texts(client.smembers(keys.queues)))


class Registry:
    """Registry entries, idle lists, events and depths on one Redis (str responses)."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = client
        self.keys = keys
        self.settings = settings
        self._extend = register(client, "extend")
        self._register = register(client, "register")  # on a full Redis too

    def write_entry(self, worker_id: str, entry: dict[str, str], pipe: Any = None) -> None:
        """Write ``worker_id``'s registry entry, refresh its expiry (``worker_ttl_s``) and
        list it, also on a full Redis (register.lua); on ``pipe`` when given (the caller
        executes it), else at once."""
        p = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        pairs = [x for kv in entry.items() for x in kv]
        p.evalsha(self._register.sha, 2, self.keys.worker(worker_id), self.keys.workers, self.keys.prefix,
                  int(self.settings.worker_ttl_s * 1000), worker_id, *pairs)
        if pipe is None:
            self.execute(p)

    def execute(self, pipe: Any, conn: redis.Redis | None = None) -> list[Any]:
        """Run ``pipe`` (its scripts called by sha), a pipeline of ``conn`` (by default this
        registry's client); a server that lost its scripts (a restart, a replica promoted
        by a failover) gets them loaded through ``conn``, one by one (a full Redis refuses
        SCRIPT LOAD in a transaction), and the pipeline once more: every command in it may
        run twice. Through ``conn``: the heartbeat thread must not open connections in the
        hub's client (a gevent socket serves only the thread that made it)."""
        commands = queued(pipe)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            for script in (self._register, self._extend):  # on a cluster: every primary
                (conn or self.redis).script_load(script.script)
            for args, options in commands:
                pipe.execute_command(*args, **options)
            return list(pipe.execute())

    def beat(self, conn: redis.Redis, worker_id: str, entry: dict[str, str], queues: Sequence[str],
             running: Mapping[str, Sequence[str]]) -> tuple[list[str], frozenset[str]]:
        """A worker's heartbeat on its own connection ``conn``: write its entry, extend the
        claims of the ``running`` job ids (queue -> ids) by ``visibility_timeout_s``, take the
        ids asked to be aborted on its ``queues`` and read the paused queues; returns (abort
        ids, paused queue names)."""
        pipe = conn.pipeline(transaction=False)
        self.write_entry(worker_id, entry, pipe)
        for queue, ids in running.items():  # on the Redis clock, as reap.lua reads the deadlines
            if ids:
                pipe.evalsha(self._extend.sha, 1, self.keys.inflight(queue), self.keys.prefix,
                             self.settings.visibility_timeout_s, *ids)
        for queue in queues:
            pipe.smembers(self.keys.aborts(worker_id, queue))
            pipe.delete(self.keys.aborts(worker_id, queue))
        pipe.smembers(self.keys.paused)
        replies = self.execute(pipe, conn)
        n = 2 * len(queues)
        aborts = set().union(*replies[-1 - n:-1:2]) if queues else set()
        return sorted(aborts), frozenset(texts(replies[-1]))

    def paused(self) -> frozenset[str]:
        """Names of the paused queues."""
        return frozenset(texts(self.redis.smembers(self.keys.paused)))

    def pause(self, queue: str) -> bool:
        """Pause ``queue``: workers stop claiming its jobs within a heartbeat (running ones
        finish; queued ones stay queued). False when it was paused already."""
        return bool(self.redis.sadd(self.keys.paused, queue))

    def resume(self, queue: str) -> bool:
        """Resume ``queue`` (workers claim its jobs again within a heartbeat). False when it
        was not paused."""
        return bool(self.redis.srem(self.keys.paused, queue))

    def leave_idle(self, worker_id: str, queues: Iterable[str]) -> None:
        """No job is handed to ``worker_id`` any more (until its next idle claim)."""
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.zrem(self.keys.idle(q), worker_id)
        pipe.execute()

    def ids(self) -> set[str]:
        """Ids of every registered worker and supervisor (entries may have expired)."""
        return set(texts(self.redis.smembers(self.keys.workers)))

    def fields(self, ids: Sequence[str], *names: str) -> list[list[str | None]]:
        """``names`` of each entry of ``ids`` (None where missing), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hmget(self.keys.worker(wid), *names)
        return list(pipe.execute()) if ids else []

    def entries(self) -> list[dict[str, str]]:
        """Every live registry entry (raw strings), ordered by id."""
        ids = sorted(self.ids())
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(self.keys.worker(wid))
        return [e for e in (pipe.execute() if ids else []) if e]

    def claim_lost(self, ids: Sequence[str], claimant: str) -> list[str]:
        """Of the dead workers ``ids``, those whose jobs ``claimant`` (a reaper's or a
        supervisor's id) is to take back, and whose event it is to record: the ones no
        one else claimed in the last LOST_CLAIM_S seconds (``{p}:reaping:{id}``, SET NX:
        one winner; its own claim counts again). Several reapers, and a supervisor, may
        see one worker dead at once: one death, one take-back, one event. One round
        trip; raises redis.RedisError."""
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.set(self.keys.reaping(wid), claimant, nx=True, ex=LOST_CLAIM_S)
            pipe.get(self.keys.reaping(wid))
        holders = pipe.execute()[1::2]
        return [wid for wid, holder in zip(ids, holders) if holder == claimant]

    def record_event(self, event: dict[str, Any]) -> None:
        """Push ``event`` (a JSON-ready dict) on the events list, keeping the newest
        MAX_EVENTS; logs and carries on when Redis refuses."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self.keys.events, json.dumps(event_entry(event), separators=(",", ":"), default=str))
            pipe.ltrim(self.keys.events, 0, MAX_EVENTS - 1)
            pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("event not recorded (%s): %s", exc, event)

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first (:func:`event_entry`)."""
        return [event_entry(json.loads(e)) for e in self.redis.lrange(self.keys.events, 0, max(0, limit - 1))]

    def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Per queue (``queues``, or every queue ever used): ready (due now) and delayed
        (scheduled or retrying) jobs."""
        names = list(queues) if queues is not None else queue_names(self.redis, self.keys)
        pipe = self.redis.pipeline(transaction=False)
        for q in names:
            pipe.zcard(self.keys.ready(q))
            pipe.zcard(self.keys.scheduled(q))
        replies = pipe.execute() if names else []
        return {q: {"ready": int(replies[2 * i]), "delayed": int(replies[2 * i + 1])}
                for i, q in enumerate(names)}
