"""The worker's heartbeat: a native thread that a CPU-bound job cannot starve.

Every ``heartbeat_interval_s`` it refreshes the worker's registry entry (TTL
``worker_ttl_s``: id, host, pid, queues, running jobs with their current stack, jobs done,
RSS), extends the claims of the running jobs, collects abort requests for the worker, and
reports jobs that overran their timeout without yielding (a greenlet timeout cannot fire
while the job holds the hub). It runs in a real OS thread (gevent's original
``start_new_thread``) with its own Redis connection; under monkey patching that
connection runs on the thread's own gevent hub, so it never waits for the main one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("runtime.worker")


def _original(module: str, name: str) -> Any:
    try:
        from gevent import monkey
        return monkey.get_original(module, name)
    except ImportError:  # pragma: no cover - gevent is a dependency
        return getattr(__import__(module), name)


def short_stack(frame: Any, limit: int = 4) -> list[str]:
    """The innermost ``limit`` frames of ``frame`` as 'file:line in func' strings."""
    if frame is None:
        return []
    out = []
    while frame is not None and len(out) < limit:  # no source lines read: cheap under the GIL
        code = frame.f_code
        out.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return out


class Heartbeat:
    """The native heartbeat thread of one worker; ``start()`` then ``stop()``."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self._stop = False
        self._sleep = _original("time", "sleep")
        self.host = socket.gethostname()
        self.pid = os.getpid()
        try:
            self.proc: Any = psutil.Process()
            self.pid_started = self.proc.create_time()
        except (psutil.Error, OSError):  # no /proc: the reaper compares pids only
            self.proc, self.pid_started = None, 0.0
        self._reported: set[str] = set()
        self._main_thread = _original("threading", "get_ident")()

    def start(self) -> None:
        _original("_thread", "start_new_thread")(self._loop, ())

    def stop(self) -> None:
        self._stop = True

    def _loop(self) -> None:
        import redis
        pool = self.worker.redis.connection_pool
        conn = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs))
        interval = self.worker.settings.heartbeat_interval_s
        limits = self.worker.limits
        # with a recycling limit, the thread also wakes every mem_check_interval_s for it
        tick = min(interval, self.worker.settings.mem_check_interval_s) if limits.active else interval
        next_beat = 0.0
        while not self._stop:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + interval
                try:
                    self.beat(conn)
                except Exception as exc:  # noqa: BLE001 - a heartbeat must keep beating
                    log.warning("heartbeat failed: %s", exc)
            if limits.active:
                self._check_limits()
            self._sleep(max(0.0, min(tick, next_beat - time.monotonic())))

    def _check_limits(self) -> None:
        """The timer check of the recycling limits; a crossing is handed to the hub."""
        try:
            why = self.worker.limits.tick()
        except Exception as exc:  # noqa: BLE001 - keep beating
            log.warning("memory check failed: %s", exc)
            return
        if why is not None:
            import gevent
            w = self.worker
            w._hub.loop.run_callback_threadsafe(gevent.spawn, w.recycle, why)

    def registry_entry(self) -> dict[str, str]:
        w = self.worker
        running = []
        frames = sys._current_frames()
        for job_id, rj in list(w.running.items()):
            g = rj.greenlet
            # a job that has ended shows no stack (its greenlet may still be recording it)
            frame = getattr(g, "gr_frame", None) if g is not None and not rj.done else None
            if frame is None and g is not None and not rj.done and not g.dead:
                frame = frames.get(self._main_thread)  # the job holds the hub right now
            running.append({"id": job_id, "path": rj.path, "started_at": rj.started_at,
                            "run": g is not None, "stack": short_stack(frame)})
        return {
            "id": w.id, "host": self.host, "pid": str(self.pid), "pid_started": repr(self.pid_started),
            "queues": ",".join(w.settings.queues), "greenlets": str(w.settings.greenlets),
            "started_at": repr(w.started_at), "heartbeat_at": repr(time.time()),
            "jobs_done": str(w.jobs_done), "rss_bytes": str(self._rss()),
            "state": w.state, "running": json.dumps(running), "supervisor": w.supervisor_id,
            "mem_limit_bytes": str(w.settings.mem_limit_bytes or ""),
            "recycle": w.recycled.detail if w.recycled else "",
        }

    def _rss(self) -> int:
        try:
            return self.proc.memory_info().rss if self.proc is not None else 0
        except (psutil.Error, OSError):
            return 0

    def beat(self, conn: Any) -> None:
        w = self.worker
        keys = w.broker.keys
        s = w.settings
        ids = list(w.running)
        pipe = conn.pipeline(transaction=False)
        pipe.hset(keys.worker(w.id), mapping=self.registry_entry())
        pipe.pexpire(keys.worker(w.id), int(s.worker_ttl_s * 1000))
        pipe.sadd(keys.workers, w.id)
        if ids:
            deadline_ms = (time.time() + s.visibility_timeout_s) * 1000
            pipe.zadd(keys.inflight, {i: deadline_ms for i in ids}, xx=True)
        pipe.smembers(keys.aborts(w.id))
        pipe.delete(keys.aborts(w.id))
        replies = pipe.execute()
        aborts = replies[-2]
        if aborts:
            w.request_abort(sorted(aborts))
        self._watchdog(conn)

    def _watchdog(self, conn: Any) -> None:
        """Report jobs past their timeout by more than a heartbeat: they are not yielding."""
        now = time.time()
        margin = max(1.0, 2 * self.worker.settings.heartbeat_interval_s)
        for job_id, rj in list(self.worker.running.items()):
            if job_id in self._reported or rj.timeout_s is None:
                continue
            if now - rj.started_at > rj.timeout_s + margin:
                frame = sys._current_frames().get(self._main_thread)
                stack = short_stack(frame, limit=6)
                msg = (f"job {job_id} ({rj.path}) has run {now - rj.started_at:.1f} s, past its timeout "
                       f"of {rj.timeout_s} s, without yielding to the gevent hub (CPU-bound or blocking "
                       f"call); it cannot be interrupted, and ends with status timeout when it returns. "
                       f"Hub stack: {' <- '.join(stack)}")
                log.error(msg)
                try:
                    conn.hset(self.worker.broker.keys.job(job_id), "overrun", msg)
                except Exception:  # noqa: BLE001
                    pass
                self._reported.add(job_id)
