"""The Redis broker: queues, claims, completions, wake-ups and taking jobs back.

Every state change is one Lua script (``runtime/broker/lua/*.lua``), so each is atomic and
many jobs share one round trip: :meth:`RedisBroker.enqueue` takes a batch, :meth:`claim`
takes up to K jobs, :meth:`finish` records many outcomes. Delivery is at-least-once: a
claim moves a job to ``{p}:inflight`` with a deadline that the worker's heartbeat
extends; :meth:`reap` takes back the jobs of a dead worker at once and any claim whose
deadline passed. Time is the Redis server's clock. Each script gets the keys its caller
knows in KEYS (see each script's header); the keys are built here, from
runtime.broker.keys.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import redis
import redis.cluster

from ..job import queue_of
from ..messages import Claimed, NewJob, Outcome
from ..settings import Settings
from ..status import FINAL, Status
from .connection import full
from .direct import blpop, direct
from .keys import Keys
from .registry import Registry, queue_names
from .replies import CLAIM_FIELDS, claimed_from
from .scripts import NAMES, register

log = logging.getLogger("runtime.broker")

#: Longest a WAIT for replicas (wait_replicas) holds a call, milliseconds.
WAIT_TIMEOUT_MS = 1000


class Reaped(NamedTuple):
    """What :meth:`RedisBroker.reap` did: jobs requeued and failed (worker-lost, or
    timeout past a hard deadline) in all, and of those, the jobs of the workers dropped."""

    requeued: int
    failed: int
    dropped_requeued: int
    dropped_failed: int

class RedisBroker:
    """Queue operations on one Redis. ``client`` must decode responses to str."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.registry = Registry(client, self.keys, settings)
        self._scripts = {name: register(client, name) for name in NAMES}
        self._sha = {name: s.sha for name, s in self._scripts.items()}
        self._short = False  # the last WAIT found fewer replicas than wait_replicas
        self._named: set[str] = set()  # queues this process added to {p}:queues
        self.clustered = isinstance(client, redis.cluster.RedisCluster)
        #: the caps of the tasks the claiming worker serves, as claim.lua reads them
        #: (runtime.caps.caps_args; set by the worker)
        self.caps: tuple[Any, ...] = ()

    # ---- calling scripts ----------------------------------------------------------------

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` in one round trip (see :meth:`calls`)."""
        return self.calls([self.call(name, keys, args)])[0]

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The EVALSHA of script ``name`` with ``keys`` and ``args`` (after the key prefix),
        as :meth:`calls` takes it."""
        return ("EVALSHA", self._sha[name], len(keys), *keys, self.settings.key_prefix, *args)

    def calls(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """:meth:`_sent`, followed on the same connection by ``WAIT`` for ``wait_replicas``
        replicas (at most WAIT_TIMEOUT_MS) when set: the writes are then on that many
        replicas when this returns, or a warning says they were not (they stand on the
        master all the same)."""
        n = self.settings.wait_replicas
        if not n:
            return self._sent(calls)
        replies = self._sent([*calls, ("WAIT", n, WAIT_TIMEOUT_MS)])
        acked = replies.pop()
        if int(acked) < n and not self._short:
            log.warning("writes reached %s of %d replicas within %d ms (wait_replicas): a failover now may lose "
                        "them", acked, n, WAIT_TIMEOUT_MS)
        self._short = int(acked) < n
        return replies

    def _sent(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``calls`` (EVALSHA and plain commands, as argument tuples) in one round trip
        below redis-py's command layer (runtime.broker.direct). A server that lost its
        script cache gets them loaded and only the calls that did not run are sent again (a
        claim that ran is not claimed twice); a broken connection goes through a redis-py
        pipeline with its retries. Raises the first error reply."""
        if self.clustered:  # redis-py's cluster pipeline: each call to the node of its slot
            return self._pipeline(calls)
        try:
            replies = direct(self.redis.connection_pool, calls)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return self._pipeline(calls)
        redo = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if redo:
            self._load_scripts()
            again = [calls[i] for i in redo] + [c for c in calls[-1:] if c[0] == "WAIT"]  # the WAIT after them
            places = redo + [len(calls) - 1] * (len(again) - len(redo))
            for i, r in zip(places, direct(self.redis.connection_pool, again)):
                replies[i] = r
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """``calls`` through a redis-py pipeline (reconnecting); if the server lost its
        script cache (a restart), the scripts are loaded and the pipeline runs once more (a
        finish that did run is fenced, a claim that did not get its reply is taken back)."""
        loaded = False
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call)  # type: ignore[no-untyped-call]
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                self._load_scripts()
                loaded = True

    def _load_scripts(self) -> None:
        """Load every script into a server that lost them (a restart, SCRIPT FLUSH), in one
        transaction, so that no other client sees some of them loaded and not others."""
        if self.clustered:  # every primary: a call goes to the node of its slot
            for script in self._scripts.values():
                self.redis.script_load(script.script)
            return
        pipe = self.redis.pipeline(transaction=True)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        try:
            pipe.execute()
        except redis.ResponseError as exc:
            if not full(exc):
                raise
            for script in self._scripts.values():  # a full Redis refuses them in a transaction only
                self.redis.script_load(script.script)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any], queue: str | None = None) -> Any:
        """The reply of script ``name`` (runtime/broker/lua) run once with ``keys`` and
        ``args`` (after the key prefix); for scripts whose caller lives elsewhere
        (fire.lua: runtime.scheduler.state). With ``queue`` (a script that may queue jobs on
        it), the queue is named in {p}:queues first, in the same round trip, once per
        process: a script in the queue's hash slot cannot write that deployment-wide key."""
        named = queue is None or queue in self._named
        calls = [self.call(name, keys, args)] if named else [("SADD", self.keys.queues, queue),
                                                             self.call(name, keys, args)]
        reply = self.calls(calls)[-1]
        if not named:
            self._named.add(str(queue))
        return reply

    # ---- producing ----------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> tuple[float, dict[str, str]]:
        """Create and queue ``jobs`` in one round trip (one script call per queue).

        Returns (the server time, UNIX s; {id of a job not queued: id of the job holding
        its unique key, or its own id when a job with it exists}): a job whose unique key
        is held, or whose id exists, is not queued (enqueue.lua)."""
        by_queue: dict[str, list[NewJob]] = {}
        for j in jobs:
            by_queue.setdefault(j.queue, []).append(j)
        calls = []
        groups = list(by_queue.values())
        for group in groups:
            queue = group[0].queue
            keys = [*self.keys.queue_keys(queue), self.keys.inflight(queue),
                    self.keys.status(queue, Status.QUEUED), self.keys.status(queue, Status.STARTED)]
            unique_keys: list[str] = []
            args: list[Any] = [self.settings.visibility_timeout_s, queue, len(group)]
            for j in group:
                keys.append(self.keys.job(j.id))
                if j.unique_key:
                    unique_keys.append(self.keys.unique(queue, j.unique_key))
                at = 7 + len(group) + len(unique_keys) if j.unique_key else 0  # 1-based, in KEYS
                args += (j.id, j.path, j.params_json, j.priority, repr(float(j.delay_s)),
                         json.dumps(j.meta, separators=(",", ":")) if j.meta else "",
                         at, max(1, round(j.unique_for_s * 1000)))
            calls.append(self.call("enqueue", keys + unique_keys, args))
        if not calls:
            return 0.0, {}
        # a queue is named in {p}:queues (the reaper and the readers walk it) before its
        # first job: once per queue and process, in the same round trip
        new = [q for q in by_queue if q not in self._named]
        held: dict[str, str] = {}
        replies = self.calls([("SADD", self.keys.queues, *new), *calls] if new else calls)[1 if new else 0:]
        self._named.update(new)
        for group, reply in zip(groups, replies):
            for i in range(1, len(reply), 2):
                held[group[int(reply[i]) - 1].id] = str(reply[i + 1])
        return float(replies[-1][0]), held

    # ---- claiming and finishing ---------------------------------------------------------

    def _claim_call(self, worker_id: str, k: int, queues: Sequence[str], idle: bool) -> tuple[Any, ...]:
        keys: list[str] = []
        names = self.keys
        for q in queues:
            keys += (*names.queue_keys(q), names.handoff(worker_id, q), names.running(worker_id, q),
                     names.inflight(q), names.dropped(q))
        return self.call("claim", keys, (worker_id, k, self.settings.visibility_timeout_s, int(idle), *self.caps))

    def _claim_reply(self, reply: Sequence[str]) -> tuple[float, float | None, list[Claimed]]:
        if reply[2]:
            log.error("dropped queue entries whose job document is missing (expired, evicted or deleted; "
                      "counted per queue in %s): %s", self.keys.dropped("QUEUE"), reply[2])
        jobs = [claimed_from(reply[i:i + CLAIM_FIELDS]) for i in range(3, len(reply), CLAIM_FIELDS)]
        return float(reply[0]), (float(reply[1]) if reply[1] else None), jobs

    def claim(self, worker_id: str, k: int, queues: Sequence[str],
              idle: bool = False) -> tuple[float, float | None, list[Claimed]]:
        """Claim up to ``k`` due jobs from ``queues`` (first ones first). ``idle``: the worker
        runs nothing, so when nothing is due it is registered to be handed the next job.

        Returns (server time, next due time of a delayed job or None, claimed jobs).
        """
        return self.cycle([], worker_id, k, queues, idle)[1:]

    def _finish_calls(self, outcomes: Sequence[Outcome], worker_id: str) -> list[tuple[Any, ...]]:
        """One finish.lua call per queue of ``outcomes`` (its keys in one hash slot)."""
        by_queue: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_queue.setdefault(o.queue, []).append(o)
        ttl = self.settings.ttl_s
        calls = []
        for queue, group in by_queue.items():
            keys = [*self.keys.queue_keys(queue)[:3], self.keys.inflight(queue), self.keys.running(worker_id, queue)]
            args: list[Any] = [len(group), 1]
            for o in group:
                keys += (self.keys.job(o.id), self.keys.notify(o.id))
                number = (0.0 if o.keep == "none" else ttl[o.status]) if o.status in FINAL else o.number
                # a final status's ttl in whole seconds: EXPIRE takes the text as it is
                args += (o.id, o.attempt, o.status.value, str(math.ceil(number)) if o.status in FINAL
                         else repr(float(number)), o.note, o.history_tail, 1,
                         "c" if o.keep == "compact" else "", len(o.fields))
                for field_value in o.fields.items():
                    args += field_value
            calls.append(self.call("finish", keys, args))
        return calls

    def finish(self, outcomes: Sequence[Outcome], worker_id: str, idle_on: Sequence[str] = ()) -> list[str]:
        """Record the outcomes of ``worker_id``'s attempts in one round trip; returns the ids
        of stale attempts (ignored). With ``idle_on`` queues, also registers the worker idle
        on them (same round trip)."""
        calls = self._finish_calls(outcomes, worker_id)
        n = len(calls)
        if idle_on and not self.caps:  # a worker with caps is not registered idle: see claim.lua
            groups = [[q] for q in idle_on] if self.clustered else [list(idle_on)]  # a call: one slot
            calls += [self.call("idle", [self.keys.idle(q) for q in group], (worker_id,)) for group in groups]
        replies = self.calls(calls) if calls else []
        return [i for reply in replies[:n] for i in reply]

    def cycle(self, outcomes: Sequence[Outcome], worker_id: str, k: int, queues: Sequence[str],
              idle: bool) -> tuple[list[str], float, float | None, list[Claimed]]:
        """:meth:`finish` then :meth:`claim`, in one round trip (the worker's steady state).
        On a Redis Cluster, where a call touches one queue's slot, the queues after the
        first are claimed from in turn while the batch has room (a round trip each).

        Returns (stale ids, server time, next due time or None, claimed jobs).
        """
        calls = self._finish_calls(outcomes, worker_id)
        n = len(calls)
        first = queues[:1] if self.clustered else queues
        calls.append(self._claim_call(worker_id, k, first, idle))
        replies = self.calls(calls)
        now, due, jobs = self._claim_reply(replies[-1])
        for q in queues[len(first):]:
            if len(jobs) >= k or any(c.alone for c in jobs):
                break
            _, more_due, more = self._claim_reply(self.calls([self._claim_call(worker_id, k - len(jobs), [q],
                                                                                 idle and not jobs)])[0])
            jobs += more
            due = more_due if due is None or (more_due is not None and more_due < due) else due
        return [i for reply in replies[:n] for i in reply], now, due, jobs

    def wait_for_wakeup(self, conn: redis.Redis, worker_id: str, queues: Sequence[str],
                        timeout_s: float) -> Claimed | None:
        """Block until a job is handed to this worker (returned, already claimed for it), a
        job is queued on ``queues`` (None: claim now) or ``timeout_s`` passes (None).

        ``conn`` should be a connection of its own: this blocks it.
        """
        handoffs = [self.keys.handoff(worker_id, q) for q in queues]
        # Redis reads a timeout under 1 ms as 0, "block forever": never send one
        reply = blpop(conn, [*handoffs, *(self.keys.wake(q) for q in queues)], max(timeout_s, 0.01))
        if isinstance(reply, Exception):
            raise reply
        if reply is None or reply[0] not in handoffs:
            return None
        if len(queues) > 1:  # off the idle sets of its other queues (enqueue.lua took it off this one)
            self.calls([("ZREM", self.keys.idle(q), worker_id) for q in queues
                        if self.keys.handoff(worker_id, q) != reply[0]])
        return claimed_from(json.loads(reply[1]))

    # ---- taking jobs back ---------------------------------------------------------------

    def reap(self, dead_workers: Sequence[str] = (), stopping: str = "",
             unstarted: Sequence[str] = ()) -> Reaped:
        """Take back the jobs of ``dead_workers`` and of expired claims, and deregister the
        worker (or supervisor) ``stopping`` cleanly (its unrun jobs requeued as interrupt);
        trim the status indexes of expired documents. Jobs in ``unstarted`` (a dead
        worker's prefetched jobs, known not to have run) are requeued without counting a
        lost worker against them. Returns the counts of each (:class:`Reaped`), summed over
        the per-queue calls."""
        ttl = self.settings.ttl_s
        dropped = ([stopping] if stopping else []) + list(dead_workers)
        known = sorted(self.registry.ids())
        pipe = self.redis.pipeline(transaction=False)
        for w in known:
            pipe.exists(self.keys.worker(w))
        live = [w for w, n in zip(known, pipe.execute() if known else []) if n]
        args: list[Any] = [self.settings.max_lost, ttl[Status.FAILED], int(bool(stopping)), len(dropped), *dropped,
                           len(ttl)]
        for status, seconds in ttl.items():
            args += (status, seconds)
        args += (len(live), *live, len(unstarted), *unstarted)
        calls = []
        for q in self.queue_names():  # one call per queue: its keys are in one hash slot
            ready, _, wake, idle = self.keys.queue_keys(q)
            keys = [ready, wake, idle, self.keys.inflight(q)]
            for w in dropped:
                keys += (self.keys.running(w, q), self.keys.aborts(w, q), self.keys.handoff(w, q))
            calls.append(self.call("reap", keys, args))
        replies = self.calls(calls) if calls else []
        if dropped:  # their registry entries, once their jobs are back (a crash before: done again)
            self.calls([("DEL", *(self.keys.worker(w) for w in dropped)), ("SREM", self.keys.workers, *dropped)])
        return Reaped(*(sum(int(r[i]) for r in replies) for i in range(4)))

    def queue_names(self) -> list[str]:
        """Every queue ever used ({p}:queues), sorted."""
        return queue_names(self.redis, self.keys)

    # ---- control and waiting ------------------------------------------------------------

    def control(self, action: str, ids: Sequence[str], by: str = "") -> list[str]:
        """cancel / abort / requeue ``ids``; one reply per id: 'ok', 'missing' or the status
        that does not allow it. ``by``: who asked and from where, kept in each cancel and
        requeue history entry, and in an abort's entry when the worker writes it ("" for
        no one named)."""
        return self._per_queue("control", ids, lambda i: (self.keys.job(i), self.keys.notify(i)),
                               (action, self.settings.ttl_s[Status.CANCEL], by))

    def _per_queue(self, name: str, ids: Sequence[str], keys_of: Callable[[str], Sequence[str]],
                   head: Sequence[Any]) -> list[str]:
        """Script ``name`` once per queue of ``ids`` (its keys in one hash slot), in one round
        trip: KEYS the ``keys_of`` each id, ARGV ``head`` then the ids. One reply per id, in
        order; an id that names no queue names no job: 'missing'."""
        groups: dict[str, list[int]] = {}
        for n, i in enumerate(ids):
            q = queue_of(i)
            if q is not None:
                groups.setdefault(q, []).append(n)
        calls = [self.call(name, [k for n in g for k in keys_of(ids[n])], (*head, *(ids[n] for n in g)))
                 for g in groups.values()]
        out = ["missing"] * len(ids)
        for g, reply in zip(groups.values(), self.calls(calls) if calls else []):
            for n, r in zip(g, reply):
                out[n] = str(r)
        return out
