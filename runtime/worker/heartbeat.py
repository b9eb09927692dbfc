"""The worker's heartbeat: a native thread that a CPU-bound job cannot starve.

Every ``heartbeat_interval_s`` it refreshes the worker's registry entry (TTL
``worker_ttl_s``: id, host, pid, queues, running jobs with their current stack, jobs done,
RSS), extends the claims of the jobs it holds, collects abort requests for the worker,
and reports jobs that overran their timeout without yielding (a greenlet timeout cannot
fire while the job holds the hub). With a recycling limit it also checks the limits
every ``mem_check_interval_s``. It runs in a real OS thread (gevent's original
``start_new_thread``) with its own Redis connection; under monkey patching that
connection runs on the thread's own gevent hub, so it never waits for the main one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import redis

from ..broker import RedisBroker
from ..broker.connection import REDIS_ERRORS, disconnect, full, moved_master, own_client
from ..caps import caps_listing
from ..errors import BrokerUnavailable
from ..process import RSS, hostname, rss_reader, this_process
from ..redact import mask
from ..settings import Settings
from ..store import RedisJobStore
from .limits import Limits, Recycle
from .link import RedisLink
from .slots import Slots

log = logging.getLogger("runtime.worker")


def _original(module: str, name: str) -> Any:
    from gevent import monkey
    return monkey.get_original(module, name)


def short_stack(frame: FrameType | None, limit: int = 4) -> list[str]:
    """The innermost ``limit`` frames of ``frame`` as 'file:line in func' strings."""
    out: list[str] = []
    while frame is not None and len(out) < limit:  # no source lines read: cheap under the GIL
        code = frame.f_code
        out.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return out


#: A worker samples its RSS for its registry entry (``rss_history``, the dashboard's chart)
#: every RSS_SAMPLE_S seconds and keeps the newest RSS_SAMPLES: an hour.
RSS_SAMPLE_S = 30.0
RSS_SAMPLES = 120


class Beating(Protocol):
    """What the heartbeat reads of its worker (from another thread: reads only)."""

    id: str
    settings: Settings
    broker: RedisBroker
    live: RedisJobStore
    slots: Slots
    limits: Limits
    started_at: float
    supervisor_id: str
    recycled: Recycle | None
    link: RedisLink
    #: the paused queues; the heartbeat writes it (one assignment), the claim loop reads it
    paused: frozenset[str]

    @property
    def state_name(self) -> str: ...

    @property
    def jobs_done(self) -> int: ...

    def from_thread(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def request_abort(self, ids: list[str]) -> None: ...

    def recycle(self, why: Recycle) -> None: ...


class Heartbeat:
    """The native heartbeat thread of one worker; ``start()`` then ``stop()``."""

    def __init__(self, worker: Beating) -> None:
        self.worker = worker
        self._stop = False
        self._sleep = _original("time", "sleep")
        self.host = hostname()
        self.pid = os.getpid()
        self.pid_started = this_process()[1]  # 0 without /proc: the reaper compares pids only
        self.rss: RSS | None = rss_reader()  # None: the entry says 0
        self.rss_samples: deque[tuple[int, int]] = deque(maxlen=RSS_SAMPLES)
        self._reported: set[str] = set()
        self._main_thread = _original("threading", "get_ident")()

    def start(self) -> None:
        _original("_thread", "start_new_thread")(self._loop, ())

    def stop(self) -> None:
        self._stop = True

    def own_connection(self) -> redis.Redis:
        """A Redis client on a pool of its own, like the worker's (made in the thread that
        uses it: a Sentinel client's connections to the Sentinels are its own too)."""
        return own_client(self.worker.broker.redis)

    def _loop(self) -> None:
        conn = self.own_connection()
        w = self.worker
        interval = w.settings.heartbeat_interval_s
        # with a recycling limit, the thread also wakes every mem_check_interval_s for it
        tick = min(interval, w.settings.mem_check_interval_s) if w.limits.active else interval
        next_beat = 0.0
        try:
            while not self._stop:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + interval
                    try:
                        self.beat(conn)
                        w.link.ok("sending its heartbeat")
                    except Exception as exc:  # noqa: BLE001 - a heartbeat must keep beating
                        if not w.link.failed(exc, "sending its heartbeat"):
                            log.warning("heartbeat failed: %s", exc)
                if w.limits.active:
                    self._check_limits()
                self._sleep(max(0.0, min(tick, next_beat - time.monotonic())))
        finally:
            disconnect(conn)

    def _check_limits(self) -> None:
        """The timer check of the recycling limits; a crossing is handed to the hub."""
        try:
            why = self.worker.limits.tick()
        except Exception as exc:  # noqa: BLE001 - keep beating
            log.warning("memory check failed: %s", exc)
            return
        if why is not None:
            self.worker.from_thread(self.worker.recycle, why)

    def registry_entry(self) -> dict[str, str]:
        """The worker's registry entry (strings), as ``runtime workers`` reads it."""
        w = self.worker
        now, rss = time.time(), self.rss and self.rss.read() or 0
        if not self.rss_samples or now - self.rss_samples[-1][0] >= RSS_SAMPLE_S:
            self.rss_samples.append((int(now), rss))
        running = []
        frames = sys._current_frames()
        for job_id, rj in list(w.slots.jobs.items()):
            g = rj.greenlet
            # a job that has ended shows no stack (its greenlet may still be recording it)
            frame = getattr(g, "gr_frame", None) if g is not None and not rj.done else None
            if frame is None and g is not None and not rj.done and not g.dead:
                frame = frames.get(self._main_thread)  # the job holds the hub right now
            running.append({"id": job_id, "path": rj.path, "started_at": rj.started_at,
                            "run": g is not None, "stack": short_stack(frame)})
        entry = {
            "id": w.id, "host": self.host, "pid": str(self.pid), "pid_started": repr(self.pid_started),
            "queues": ",".join(w.settings.queues), "greenlets": str(w.settings.greenlets),
            "started_at": repr(w.started_at), "heartbeat_at": repr(now),
            "jobs_done": str(w.jobs_done), "rss_bytes": str(rss),
            "state": w.state_name, "running": json.dumps(running), "supervisor": w.supervisor_id,
            "mem_limit_bytes": str(w.settings.mem_limit_bytes or ""),
            "recycle": w.recycled.detail if w.recycled else "",
        } | self._rss_history(now)
        if w.broker.caps:  # the caps it enforces (runtime workers)
            entry["caps"] = json.dumps(caps_listing(w.broker.caps))
        return entry

    def _rss_history(self, now: float) -> dict[str, str]:
        """``{"rss_history": "[[UNIX s, bytes], ...]"}`` (oldest first) on the beat that took
        a sample, else {} (the entry keeps the field written last: HSET)."""
        if not self.rss_samples or self.rss_samples[-1][0] != int(now):
            return {}
        return {"rss_history": json.dumps(list(self.rss_samples), separators=(",", ":"))}

    def register(self) -> None:
        """The first heartbeat, before the worker claims anything (also on a full Redis:
        said once, as what still works). Raises BrokerUnavailable (one line) when Redis
        refuses it: unreachable, read-only; ConfigError for a Redis Cluster node behind a
        URL that is not ``redis+cluster://``."""
        conn = self.worker.broker.redis
        try:
            self.beat(conn)
            memory = conn.info("memory")
        except REDIS_ERRORS as exc:
            self.worker.link.refuse_misrouted(exc, conn)
            raise BrokerUnavailable(f"cannot register with Redis at {self.worker.link.where}: " + (
                "it is full (used memory over maxmemory; runtime info)" if full(exc) else mask(str(exc)))) from None
        if 0 < int(memory.get("maxmemory") or 0) < int(memory.get("used_memory") or 0):
            log.warning("Redis at %s is full (used memory over maxmemory, policy %s): producers are refused, "
                        "and this worker runs and records the jobs it holds (progress and live logs are not "
                        "written) until memory is freed or maxmemory raised (runtime info)",
                        self.worker.link.where, memory.get("maxmemory_policy"))

    def beat(self, conn: redis.Redis) -> None:
        """One heartbeat on ``conn`` (see the module docstring)."""
        w = self.worker
        moved_master(conn)  # on Sentinel: beat on the new master as soon as it is named
        running: dict[str, list[str]] = {}
        for job_id, rj in list(w.slots.jobs.items()):
            running.setdefault(rj.claimed.queue, []).append(job_id)
        aborts, paused = w.broker.registry.beat(conn, w.id, self.registry_entry(), w.settings.queues, running)
        if aborts:
            w.request_abort(aborts)
        if paused or w.paused:
            self._pauses(conn, paused)
        self._watchdog(conn)

    def _pauses(self, conn: redis.Redis, paused: frozenset[str]) -> None:
        """Take the paused queues in: the loop claims from the others from its next claim on;
        this worker leaves the idle lists of the paused ones (on every beat: a claim already
        under way may have entered one again), so no job of theirs is handed to it; a
        resumed queue gets a wake-up, as an idle worker waits on it."""
        w = self.worker
        resumed = [q for q in w.paused - paused if q in w.settings.queues]
        w.paused = paused  # one assignment: the loop reads it on its next claim
        keys = w.broker.keys
        pipe = conn.pipeline(transaction=False)
        for q in paused & set(w.settings.queues):
            pipe.zrem(keys.idle(q), w.id)
        for q in resumed:
            pipe.lpush(keys.wake(q), "1")
            pipe.ltrim(keys.wake(q), 0, 0)
        pipe.execute()

    def _watchdog(self, conn: redis.Redis) -> None:
        """Report jobs past their timeout by two heartbeats: the greenlet timeout did not
        fire, so they are not yielding."""
        now = time.time()
        w = self.worker
        margin = 2 * w.settings.heartbeat_interval_s
        for job_id, rj in list(w.slots.jobs.items()):
            if job_id in self._reported or rj.timeout_s is None:
                continue
            if now - rj.started_at > rj.timeout_s + margin:
                stack = short_stack(sys._current_frames().get(self._main_thread), limit=6)
                msg = (f"job {job_id} ({rj.path}) has run {now - rj.started_at:.1f} s, past its timeout "
                       f"of {rj.timeout_s} s, without yielding to the gevent hub (CPU-bound or blocking "
                       f"call); it cannot be interrupted, and ends with status timeout when it returns. "
                       f"Hub stack: {' <- '.join(stack)}")
                log.error(msg)
                try:
                    w.live.set_fields(job_id, {"overrun": msg}, conn)
                except REDIS_ERRORS:
                    pass
                self._reported.add(job_id)
