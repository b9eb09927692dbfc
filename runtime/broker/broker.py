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
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis

from ..messages import Claimed, NewJob, Outcome
from ..settings import Settings
from ..status import FINAL, Status
from .connection import full, texts
from .direct import direct
from .keys import Keys
from .registry import Registry
from .replies import CLAIM_FIELDS, claimed_from, listed
from .scripts import NAMES, register

log = logging.getLogger("runtime.broker")

#: Longest a WAIT for replicas (wait_replicas) holds a call, milliseconds.
WAIT_TIMEOUT_MS = 1000
class Lost(NamedTuple):
    """The jobs of lost workers (RedisBroker.mark_lost): those they ran or may have run,
    those they had prefetched but not started, and the task path of each running one."""

    running: list[str]
    unstarted: list[str]
    paths: dict[str, str]


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
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call)  # type: ignore[no-untyped-call]
        stack = list(pipe.command_stack)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            self._load_scripts()
            pipe.command_stack = stack
            return pipe.execute()

    def _load_scripts(self) -> None:
        """Load every script into a server that lost them (a restart, SCRIPT FLUSH), in one
        transaction, so that no other client sees some of them loaded and not others."""
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

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of script ``name`` (runtime/broker/lua) run once with ``keys`` and
        ``args`` (after the key prefix); for scripts whose caller lives elsewhere
        (fire.lua: runtime.scheduler.state)."""
        return self._run(name, keys, args)

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
            keys = [*self.keys.queue_keys(queue), self.keys.queues, self.keys.inflight(queue),
                    self.keys.status(queue, Status.QUEUED), self.keys.status(queue, Status.STARTED)]
            unique_keys: list[str] = []
            args: list[Any] = [self.settings.visibility_timeout_s, queue, len(group)]
            for j in group:
                keys.append(self.keys.job(j.id))
                if j.unique_key:
                    unique_keys.append(self.keys.unique(queue, j.unique_key))
                at = 8 + len(group) + len(unique_keys) if j.unique_key else 0  # 1-based, in KEYS
                args += (j.id, j.path, j.params_json, j.priority, repr(float(j.delay_s)),
                         json.dumps(j.meta, separators=(",", ":")) if j.meta else "",
                         at, max(1, round(j.unique_for_s * 1000)))
            calls.append(self.call("enqueue", keys + unique_keys, args))
        if not calls:
            return 0.0, {}
        held: dict[str, str] = {}
        replies = self.calls(calls)
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
        return self._claim_reply(self.calls([self._claim_call(worker_id, k, queues, idle)])[0])

    def _finish_call(self, outcomes: Sequence[Outcome], worker_id: str) -> tuple[Any, ...]:
        queues: dict[str, int] = {}
        keys: list[str] = []
        job_keys: list[str] = []
        args: list[Any] = [len(outcomes), 0]
        ttl = self.settings.ttl_s
        for o in outcomes:
            q = queues.get(o.queue)
            if q is None:
                q = queues[o.queue] = len(queues) + 1
                keys += (*self.keys.queue_keys(o.queue)[:3], self.keys.inflight(o.queue),
                         self.keys.running(worker_id, o.queue))
            job_keys += (self.keys.job(o.id), self.keys.notify(o.id))
            number = (0.0 if o.keep == "none" else ttl[o.status]) if o.status in FINAL else o.number
            args += (o.id, o.attempt, o.status.value, repr(float(number)), o.note, o.history_tail, q,
                     "c" if o.keep == "compact" else "", len(o.fields))
            for field_value in o.fields.items():
                args += field_value
        args[1] = len(queues)
        return self.call("finish", keys + job_keys, args)

    def finish(self, outcomes: Sequence[Outcome], worker_id: str, idle_on: Sequence[str] = ()) -> list[str]:
        """Record the outcomes of ``worker_id``'s attempts in one round trip; returns the ids
        of stale attempts (ignored). With ``idle_on`` queues, also registers the worker idle
        on them (same round trip)."""
        if not outcomes and not idle_on:
            return []
        calls: list[tuple[Any, ...]] = []
        if outcomes:
            calls.append(self._finish_call(outcomes, worker_id))
        if idle_on and not self.caps:  # a worker with caps is not registered idle: see claim.lua
            calls.append(self.call("idle", [self.keys.idle(q) for q in idle_on], (worker_id,)))
        replies = self.calls(calls)
        return list(replies[0]) if outcomes else []

    def cycle(self, outcomes: Sequence[Outcome], worker_id: str, k: int, queues: Sequence[str],
              idle: bool) -> tuple[list[str], float, float | None, list[Claimed]]:
        """:meth:`finish` then :meth:`claim`, in one round trip (the worker's steady state).

        Returns (stale ids, server time, next due time or None, claimed jobs).
        """
        calls: list[tuple[Any, ...]] = []
        if outcomes:
            calls.append(self._finish_call(outcomes, worker_id))
        calls.append(self._claim_call(worker_id, k, queues, idle))
        replies = self.calls(calls)
        stale = list(replies[0]) if outcomes else []
        return (stale, *self._claim_reply(replies[-1]))

    def wait_for_wakeup(self, conn: redis.Redis, worker_id: str, queues: Sequence[str],
                        timeout_s: float) -> Claimed | None:
        """Block until a job is handed to this worker (returned, already claimed for it), a
        job is queued on ``queues`` (None: claim now) or ``timeout_s`` passes (None).

        ``conn`` should be a connection of its own: this blocks it.
        """
        handoffs = [self.keys.handoff(worker_id, q) for q in queues]
        # Redis reads a timeout under 1 ms as 0, "block forever": never send one
        [reply] = direct(conn.connection_pool, [("BLPOP", *handoffs, *(self.keys.wake(q) for q in queues),
                                                 max(timeout_s, 0.01))])
        if isinstance(reply, Exception):
            raise reply
        if reply is None or reply[0] not in handoffs:
            return None
        return claimed_from(json.loads(reply[1]))

    # ---- taking jobs back ---------------------------------------------------------------

    def mark_lost(self, worker_ids: Sequence[str], note: str) -> Lost:
        """Before the jobs of lost workers are taken back (:meth:`reap`): the jobs they had
        started get ``lost_reason`` = ``note`` and ``alone``, so that each is claimed alone
        (claim.lua) and run alone (the worker) next time, and only a job that takes its
        worker down again is charged again (not the ones that happened to run beside it or
        were claimed with it); the jobs they had claimed but not started (prefetched, or
        handed to them) are returned apart (pass them to ``reap(unstarted=...)``: requeued
        without a charge).

        A job had started when the worker recorded its start (``began`` = its attempt on the
        job's hash, written before the task runs: runtime.worker.starts), or, with no such
        record, when its last heartbeat listed it as running; not when a watchdog spared it
        (``began`` = ``spared``: runtime.watch).

        Returns the started ids, the unstarted ids, and the task path of each started one."""
        if not worker_ids:
            return Lost([], [], {})
        queues = self.queue_names()
        pipe = self.redis.pipeline(transaction=False)
        for w in worker_ids:
            pipe.hget(self.keys.worker(w), "running")
            for q in queues:
                pipe.smembers(self.keys.running(w, q))
        replies = pipe.execute()
        jobs: set[str] = set()
        beating: set[str] = set()
        for i in range(0, len(replies), 1 + len(queues)):
            jobs = jobs.union(*replies[i + 1:i + 1 + len(queues)])
            beating.update(r["id"] for r in listed(replies[i]) if r.get("run") is True)
        ids = sorted(jobs)
        for j in ids:
            pipe.hmget(self.keys.job(j), "began", "attempt", "path")
        fields = dict(zip(ids, pipe.execute())) if ids else {}
        # its start record, or (that record lost) its last heartbeat; "spared": a watchdog
        # killed the worker for another job (runtime.watch)
        started = {j for j, (began, attempt, _) in fields.items()
                   if began == attempt or (began is None and j in beating)}
        suspects = sorted(started & jobs)
        for j in suspects:  # began: known started from its heartbeat alone (reap.lua logs it started)
            pipe.hset(self.keys.job(j), mapping={"lost_reason": note, "alone": "1", "began": fields[j][1] or ""})
        if suspects:
            pipe.execute()
        return Lost(suspects, sorted(jobs - started), {j: fields[j][2] or "?" for j in suspects})

    def reap(self, dead_workers: Sequence[str] = (), stopping: str = "",
             unstarted: Sequence[str] = ()) -> tuple[int, int]:
        """Take back the jobs of ``dead_workers`` and of expired claims, and deregister the
        worker (or supervisor) ``stopping`` cleanly (its unrun jobs requeued as interrupt);
        trim the status indexes of expired documents. Jobs in ``unstarted`` (a dead
        worker's prefetched jobs, known not to have run) are requeued without counting a
        lost worker against them. Returns (requeued, failed worker-lost)."""
        ttl = self.settings.ttl_s
        keys = [self.keys.workers]
        for w in ([stopping] if stopping else []) + list(dead_workers):
            keys.append(self.keys.worker(w))
        args: list[Any] = [self.settings.max_lost, ttl[Status.FAILED], int(bool(stopping)), len(ttl)]
        for status, seconds in ttl.items():
            args += (status, seconds)
        args += (len(unstarted), *unstarted)
        requeued, failed = self._run("reap", keys, args)
        return int(requeued), int(failed)

    def queue_names(self) -> list[str]:
        """Every queue ever used ({p}:queues), sorted."""
        return sorted(texts(self.redis.smembers(self.keys.queues)))

    # ---- control and waiting ------------------------------------------------------------

    def control(self, action: str, ids: Sequence[str], by: str = "") -> list[str]:
        """cancel / abort / requeue ``ids``; one reply per id: 'ok', 'missing' or the status
        that does not allow it. ``by``: who asked and from where, kept in each cancel and
        requeue history entry, and in an abort's entry when the worker writes it ("" for
        no one named)."""
        if not ids:
            return []
        keys: list[str] = []
        for i in ids:
            keys += (self.keys.job(i), self.keys.notify(i))
        return list(self._run("control", keys, (action, self.settings.ttl_s[Status.CANCEL], by, *ids)))

    def move(self, ids: Sequence[str], queue: str | None, priority: int | None, by: str = "") -> list[str]:
        """Move waiting ``ids`` to ``queue`` and/or ``priority`` (None: each keeps its own),
        keeping their due time; one reply per id: 'ok', 'missing' or the status of a job
        that does not wait in a queue (move.lua)."""
        if not ids:
            return []
        keys = [self.keys.job(i) for i in ids]
        args = ("" if queue is None else queue, "" if priority is None else str(priority), by, *ids)
        return list(self._run("move", keys, args))

    def adopt(self, jobs: Sequence[tuple[str, str, int, str, str, str]]) -> list[str]:
        """Queue again jobs Redis lost, from (id, queue, priority, fields JSON, history JSON,
        note) each, each queued at the ``due_at`` of its fields (delayed while that is to
        come, else ready now); returns the ids adopted (those Redis still has are left).
        See adopt.lua."""
        if not jobs:
            return []
        keys = [self.keys.queues]
        args: list[Any] = [len(jobs)]
        for job in jobs:
            job_id, queue = job[0], job[1]
            keys += (self.keys.job(job_id), self.keys.ready(queue), self.keys.scheduled(queue),
                     self.keys.wake(queue))
            args += job
        return list(self._run("adopt", keys, args))
