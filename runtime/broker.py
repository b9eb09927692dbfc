"""The Redis broker: queues, claims, completions, wake-ups and the reaper.

Every state change is one Lua script (``runtime/lua/*.lua``), so each is atomic and many
jobs share one round trip: :meth:`RedisBroker.enqueue` takes a batch, :meth:`claim` takes
up to K jobs, :meth:`finish` records many outcomes. Delivery is at-least-once: a claim
moves a job to ``{p}:inflight`` with a deadline that the worker's heartbeat extends; the
reaper takes back the jobs of a dead worker (its registry entry expired) at once and any
claim whose deadline passed. Time is the Redis server's clock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import redis

from .connection import load_script
from .keys import Keys
from .settings import Settings
from .status import FINAL, Status


@dataclass(slots=True)
class NewJob:
    """What enqueue writes: id, path, params already encoded as JSON, queue, priority,
    and the delay before it may start, seconds (0 = now)."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    delay_s: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Claimed:
    """A claimed job as the worker needs it. Times are UNIX seconds of the Redis clock."""

    id: str
    path: str
    params_json: str
    queue: str
    priority: int
    attempt: int
    retries: int
    lost: int
    queued_at: float
    due_at: float
    started_at: float
    meta: dict[str, Any]
    alone: bool = False  # runs with nothing beside it (RedisBroker.mark_lost)


@dataclass(slots=True)
class Outcome:
    """The end of one attempt: new status, its number (ttl_s when final, delay_s for a
    retry, unused otherwise), a history note, and fields to store (strings)."""

    id: str
    attempt: int
    status: Status
    number: float = 0.0
    note: str = ""
    fields: dict[str, str] = field(default_factory=dict)


CLAIM_FIELDS = 13


class RedisBroker:
    """Queue operations on one Redis. ``client`` must decode responses to str."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._enqueue = load_script(client, "enqueue")
        self._claim = load_script(client, "claim")
        self._finish = load_script(client, "finish")
        self._reap = load_script(client, "reap")
        self._control = load_script(client, "control")
        self._wait = load_script(client, "wait")
        for script in (self._claim, self._finish):  # used by EVALSHA in pipelines
            client.script_load(script.script)

    def enqueue(self, jobs: Sequence[NewJob]) -> float:
        """Create and queue ``jobs`` in one round trip; returns the server time (UNIX s)."""
        args: list[Any] = [self.settings.key_prefix, self.settings.visibility_timeout_s, len(jobs)]
        for j in jobs:
            args += [j.id, j.path, j.params_json, j.queue, j.priority, repr(float(j.delay_s)),
                     json.dumps(j.meta, separators=(",", ":")) if j.meta else ""]
        return float(self._evalsha(self._enqueue, args))

    def _evalsha(self, script: Any, args: list[Any]) -> Any:
        """Run ``script`` with ``args`` in one round trip below redis-py's command layer
        (:meth:`_script_calls`): ~65 µs of client CPU less per call on session 4's
        machine, one enqueue call each 2,695-2,808 -> 3,476-3,612 jobs/s in-process
        (peerbench: 2,779 -> 3,022)."""
        return self._script_calls([("EVALSHA", script.sha, 0, *args)])[0]

    def _script_calls(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``calls`` (EVALSHA and plain commands, as argument tuples) in one round trip
        below redis-py's command layer (:func:`direct`; the worker's flush and claim: ~0.1 ms
        less from a job's end to its outcome in Redis, see bench/README.md). A server that
        lost its script cache, or a broken connection, goes through a redis-py pipeline
        with its retries (:meth:`_execute`). Raises the first error reply."""
        try:
            replies = direct(self.client.connection_pool, calls)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call)
            return self._execute(pipe)
        redo = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if redo:  # run again only what did not run: a claim that did run is not claimed twice
            self._load_scripts()
            for i, r in zip(redo, direct(self.client.connection_pool, [calls[i] for i in redo])):
                replies[i] = r
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    def _claim_args(self, worker_id: str, k: int, queues: Sequence[str], idle: bool) -> list[Any]:
        return [self.settings.key_prefix, worker_id, k, self.settings.visibility_timeout_s,
                int(idle), len(queues), *queues]

    @staticmethod
    def _claim_reply(reply: Sequence[str]) -> tuple[float, float | None, list[Claimed]]:
        jobs = [claimed_from(reply[i:i + CLAIM_FIELDS]) for i in range(2, len(reply), CLAIM_FIELDS)]
        return float(reply[0]), (float(reply[1]) if reply[1] else None), jobs

    def claim(self, worker_id: str, k: int, queues: Sequence[str],
              idle: bool = False) -> tuple[float, float | None, list[Claimed]]:
        """Claim up to ``k`` due jobs from ``queues`` (first ones first). ``idle``: the worker
        runs nothing, so when nothing is due it is registered to be handed the next job.

        Returns (server time, next due time of a delayed job or None, claimed jobs).
        """
        return self._claim_reply(self._claim(args=self._claim_args(worker_id, k, queues, idle)))

    def _finish_args(self, outcomes: Iterable[Outcome]) -> list[Any]:
        args: list[Any] = [self.settings.key_prefix, 0]
        n = 0
        for o in outcomes:
            number = self.settings.ttl_s[o.status] if o.status in FINAL else o.number
            args += [o.id, o.attempt, o.status.value, repr(float(number)), o.note, len(o.fields)]
            for k, v in o.fields.items():
                args += [k, v]
            n += 1
        args[1] = n
        return args

    def finish(self, outcomes: Sequence[Outcome], idle_on: Sequence[str] = (), worker_id: str = "") -> list[str]:
        """Record outcomes in one round trip; returns the ids of stale attempts (ignored).

        With ``idle_on`` queues, also registers ``worker_id`` idle on them (same round trip).
        """
        if not outcomes and not idle_on:
            return []
        calls: list[tuple[Any, ...]] = []
        if outcomes:
            calls.append(("EVALSHA", self._finish.sha, 0, *self._finish_args(outcomes)))
        now = time.time()
        for q in idle_on:
            calls.append(("ZADD", self.keys.idle(q), now, worker_id))
        replies = self._script_calls(calls)
        return list(replies[0]) if outcomes else []

    def cycle(self, outcomes: Sequence[Outcome], worker_id: str, k: int, queues: Sequence[str],
              idle: bool) -> tuple[list[str], float, float | None, list[Claimed]]:
        """:meth:`finish` then :meth:`claim`, in one round trip (the worker's steady state).

        Returns (stale ids, server time, next due time or None, claimed jobs).
        """
        calls: list[tuple[Any, ...]] = []
        if outcomes:
            calls.append(("EVALSHA", self._finish.sha, 0, *self._finish_args(outcomes)))
        calls.append(("EVALSHA", self._claim.sha, 0, *self._claim_args(worker_id, k, queues, idle)))
        replies = self._script_calls(calls)
        stale = list(replies[0]) if outcomes else []
        return (stale, *self._claim_reply(replies[-1]))

    def _execute(self, pipe: Any) -> list[Any]:
        """Run the pipeline; if the server lost its script cache (a restart), load the
        scripts and run it once more. A finish that did run is fenced, so a second run of
        it changes nothing."""
        stack = list(pipe.command_stack)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            self._load_scripts()
            pipe.command_stack = stack
            return pipe.execute()

    def _load_scripts(self) -> None:
        """Load every script into a server that lost them (a restart, SCRIPT FLUSH); in one
        round trip, so that no other client sees some of them loaded and not others."""
        pipe = self.client.pipeline(transaction=True)
        for script in (self._enqueue, self._claim, self._finish, self._reap, self._control, self._wait):
            pipe.script_load(script.script)
        pipe.execute()

    def mark_lost(self, worker_ids: Sequence[str], note: str) -> tuple[list[str], list[str]]:
        """Before the jobs of lost workers are taken back (``reap``): the jobs they were
        running (or may have been) get ``lost_reason`` = ``note`` and ``alone``, so that
        each is claimed alone (claim.lua) and run alone (the worker) next time, and
        only a job that takes its worker down again is charged again (not the ones that
        happened to run beside it or were claimed with it); the jobs they had
        prefetched but not started, as their last heartbeat listed them, are returned apart
        (pass them to ``reap(unstarted=...)``: requeued without a charge).

        Returns (running ids, unstarted ids)."""
        pipe = self.client.pipeline(transaction=False)
        for w in worker_ids:
            pipe.smembers(self.keys.running(w))
            pipe.hget(self.keys.worker(w), "running")
        replies = pipe.execute() if worker_ids else []
        jobs: set[str] = set()
        unstarted: set[str] = set()
        for running_set, entry in zip(replies[::2], replies[1::2]):
            jobs |= running_set
            unstarted.update(r["id"] for r in json.loads(entry or "[]") if r.get("run") is False)
        suspects = sorted(jobs - unstarted)
        unstarted &= jobs
        for j in suspects:
            pipe.hset(self.keys.job(j), mapping={"lost_reason": note, "alone": "1"})
        if suspects:
            pipe.execute()
        return suspects, sorted(unstarted)

    def reap(self, dead_workers: Sequence[str], stopping: str = "",
             unstarted: Sequence[str] = ()) -> tuple[int, int]:
        """Take back the jobs of ``dead_workers`` and of expired claims, and deregister the
        worker ``stopping`` cleanly (its unrun jobs requeued as interrupt); trim the status
        indexes of expired documents. Jobs in ``unstarted`` (a dead worker's prefetched
        jobs, known not to have run) are requeued without counting a lost worker against
        them. Returns (requeued, failed worker-lost)."""
        ttl = self.settings.ttl_s
        args: list[Any] = [self.settings.key_prefix, self.settings.max_lost, ttl[Status.FAILED],
                           stopping, len(dead_workers), *dead_workers, len(ttl)]
        for status, seconds in ttl.items():
            args += [status, seconds]
        args += [len(unstarted), *unstarted]
        requeued, failed = self._reap(args=args)
        return int(requeued), int(failed)

    def control(self, action: str, ids: Sequence[str]) -> list[str]:
        """cancel / abort / requeue ``ids``; one reply per id: 'ok', 'missing' or the status
        that does not allow it."""
        if not ids:
            return []
        return list(self._control(args=[self.settings.key_prefix, action,
                                        self.settings.ttl_s[Status.CANCEL], *ids]))

    def register_waiter(self, key: str, ids: Sequence[str], ttl_s: float) -> list[str]:
        """Ask to be told on list ``key`` when ``ids`` end. Returns one entry per job
        already final or missing: its document as JSON ``[id, hash fields, history]``, or
        its bare id (missing, large, or past the first 20); see wait.lua."""
        return list(self._evalsha(self._wait, [self.settings.key_prefix, key, max(1, int(ttl_s) + 1), *ids]))

    def next_notice(self, key: str, timeout_s: float) -> str | None:
        """Block up to ``timeout_s`` (> 0) for the next entry on waiter list ``key`` (see
        :meth:`register_waiter`); None if none came. BLPOP below redis-py's command layer
        (:func:`direct`).

        Raises ConnectionError / TimeoutError, or ResponseError when Redis unblocked the
        call (``UNBLOCKED``, a failover): an entry may have been lost with the connection,
        so the caller asks again which jobs are final (the client's ``iter_done``) rather
        than block again."""
        [reply] = direct(self.client.connection_pool, [("BLPOP", key, timeout_s)])
        if isinstance(reply, Exception):
            raise reply
        return None if reply is None else reply[1]

    def wait_for_wakeup(self, conn: redis.Redis, worker_id: str, queues: Sequence[str],
                        timeout_s: float) -> Claimed | None:
        """Block until a job is handed to this worker (returned, already claimed for it), a
        job is queued on ``queues`` (None: claim now) or ``timeout_s`` passes (None).

        ``conn`` should be a connection of its own: this blocks it.
        """
        handoff = self.keys.handoff(worker_id)
        # Redis reads a timeout under 1 ms as 0, "block forever": never send one
        [reply] = direct(conn.connection_pool, [("BLPOP", handoff, *(self.keys.wake(q) for q in queues),
                                                 max(timeout_s, 0.01))])
        if isinstance(reply, Exception):
            raise reply
        if reply is None or reply[0] != handoff:
            return None
        return claimed_from(json.loads(reply[1]))


def claimed_from(f: Sequence[str]) -> Claimed:
    """A Claimed from the 13 claim fields of claim.lua / enqueue.lua."""
    return Claimed(f[0], f[1], f[2], f[3], int(f[4]), int(f[5]), int(f[6]), int(f[7]),
                   float(f[8]), float(f[9]), float(f[10]), json.loads(f[11]) if f[11] else {},
                   f[12] == "1")


def direct(pool: redis.ConnectionPool, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``calls`` (each a command's arguments) in one round trip on a connection of
    ``pool``, below redis-py's command layer (its retry wrapper, response callbacks,
    observability hooks and event dispatch cost ~40-70 µs of CPU a call here), and return
    the raw replies, decoded as the pool decodes; an error reply comes back as its
    ResponseError instance, like a pipeline's with ``raise_on_error=False``.

    Raises ConnectionError / TimeoutError (the connection is dropped, as redis-py does).
    Any other exception while a reply is pending (a greenlet kill, a timeout) drops the
    connection too: it is never reused mid-reply."""
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        conn = pool.get_connection("EVALSHA")
    try:
        if len(calls) == 1:
            conn.send_command(*calls[0])
        else:
            conn.send_packed_command(conn.pack_commands(calls))
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:  # read whole: the connection is clean
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
