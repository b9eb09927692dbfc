"""The supervisor: N worker processes kept running, recycled, and killed past a hard ceiling.

``runtime worker --processes N`` (or any recycling limit: ``--mem-limit``, ``--max-jobs``,
``--max-time``, which run one supervised process) starts this plain, single-threaded,
unpatched process (no gevent, no tracer: its memory stays small and flat) that:

- starts N children, each ``python -m runtime <the same arguments>`` with
  ``RUNTIME_SUPERVISOR_PID`` set, which makes it a worker. Each child is in its own
  process group, so a signal sent to the supervisor's group reaches the supervisor only
  and is forwarded exactly once (a container runtime signals PID 1; a terminal or
  ``kill -- -PGID`` signals the group: both behave the same). Children get SIGTERM if
  the supervisor dies (``PR_SET_PDEATHSIG``);
- starts a replacement the moment a child says it is recycling (SIGUSR1 from its pid), so
  the old one drains while the new one already claims;
- restarts a child that exits unexpectedly; one that dies within MIN_UPTIME_S of its
  start is restarted after a backoff doubling from BACKOFF_START_S to BACKOFF_MAX_S;
- every ``mem_check_interval_s`` reads each child's RSS; a child above the hard ceiling
  (``Settings.hard_limit_bytes``) is killed (SIGKILL) and its running jobs are requeued
  at once through the reaper (worker-lost, so the poison rule applies: a job that kills
  its worker ``max_lost`` times ends failed), with a ``kill`` event recorded
  (runtime.supervisor.watchdog);
- forwards SIGTERM/SIGINT: the first lets running jobs finish within ``grace_s``, the
  second interrupts them; then it exits once every child has;
- keeps its own registry entry (``kind`` supervisor, its children), shown by ``runtime
  workers`` with the children under it;
- with ``autoscale`` (``--processes MIN:MAX``), follows the queue latency between MIN and
  MAX processes, scaling down by drain of an idle process, never a busy one
  (runtime.supervisor.autoscale).

Signals are taken synchronously with ``sigtimedwait`` (which gives the sender's pid), not
by handlers, so no state is touched from a signal context.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis

from ..backoff import Backoff
from ..broker import RedisBroker, connect
from ..broker.connection import REDIS_ERRORS, transient
from ..errors import ExitCode
from ..process import SLOT_ENV, SUPERVISOR_ID_ENV, SUPERVISOR_PID_ENV, host_pid, hostname, new_id, rss_of, this_process
from ..settings import Settings
from ..units import fmt_bytes, plural
from ..worker.reaper import Reaper
from .autoscale import AutoscalePolicy, Autoscaler, backlog, queue_latency
from .children import Child, child_setup, kill_group
from .watchdog import enforce_hard_limit, keep_children

log = logging.getLogger("runtime.supervisor")

#: A child that exits within this many seconds of its start counts as failing to start.
MIN_UPTIME_S = 5.0
#: Backoff before restarting a child that keeps failing at start: from, to (seconds).
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
#: Children started per pass of the main loop at most.
STARTS_PER_PASS = 4
_SIGNALS = {signal.SIGCHLD, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


class Supervisor:
    """Runs ``settings.processes`` (at least 1) worker processes until stopped.

    ``argv``: the ``runtime`` arguments the children are started with (the supervisor's
    own, by default). ``burst``: a child that exits 0 (no work left) is not replaced, and
    the supervisor returns once none is left. ``run()`` returns the exit code (0).
    """

    def __init__(self, settings: Settings, argv: list[str] | None = None, burst: bool = False,
                 client: redis.Redis | None = None, autoscale: AutoscalePolicy | None = None) -> None:
        self.settings = settings
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.burst = burst
        self.n = max(1, settings.processes)
        self.redis = client or connect(settings)
        self.broker = RedisBroker(self.redis, settings)
        self.keys = self.broker.keys
        self.id = new_id("s")
        self.host = hostname()
        self.reaper = Reaper(self.broker, self.id)
        self.children: dict[int, Child] = {}
        self.hard = settings.hard_limit_bytes
        self.started_at = time.time()
        self.restarts = 0
        self.kills = 0
        self._signals = 0
        self._start_backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        self._next_start = 0.0
        self._next_beat = 0.0
        self._next_check = 0.0
        self._proc, self._started = this_process()  # no /proc: said loudly in run()
        self.autoscaler = Autoscaler(autoscale, settings.mem_limit_bytes) if autoscale else None
        self._next_scale = 0.0
        if autoscale:
            self.n = autoscale.min

    # ---- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        s = self.settings
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        if self.hard and not rss_of(self._proc):
            log.error("MEMORY LIMITS NOT ENFORCED: this system does not let the supervisor read "
                      "RSS; --mem-limit %s and the hard ceiling will never act", fmt_bytes(s.mem_limit_bytes))
        log.info("supervisor %s: %d worker %s%s%s", self.id, self.n, plural(self.n, "process", "processes"),
                 f", soft memory limit {fmt_bytes(s.mem_limit_bytes)} each, hard {fmt_bytes(self.hard)}"
                 if s.mem_limit_bytes else f", hard memory limit {fmt_bytes(self.hard)} each" if self.hard else "",
                 "".join(f", {k} {v}" for k, v in (("max_jobs", s.max_jobs), ("max_time_s", s.max_time_s)) if v))
        self._beat()
        try:
            while True:
                if self._give_up is not None and not self.children:
                    break
                self._start_children()
                if self._signals and not self.children:
                    break
                if self.burst and not self.children and self._done_bursting:
                    break
                try:
                    self._step()
                except Exception:  # noqa: BLE001 - e.g. Redis away: the children carry on
                    log.exception("supervisor: a step failed; going on")
                    time.sleep(0.5)
        finally:
            for child in self.children.values():  # only on an error of our own (or KeyboardInterrupt)
                kill_group(child, signal.SIGKILL)
            self._deregister()
        log.info("supervisor %s stopped (%d restarts, %d kills)", self.id, self.restarts, self.kills)
        return self._give_up or 0

    def _step(self) -> None:
        info = signal.sigtimedwait(_SIGNALS, self._timeout())
        while info is not None:
            self._on_signal(info.si_signo, info.si_pid)
            info = signal.sigtimedwait(_SIGNALS, 0)
        self._reap_children()
        now = time.monotonic()
        if self.hard and now >= self._next_check:
            self._next_check = now + self.settings.mem_check_interval_s
            enforce_hard_limit(self)
        if now >= self._next_beat:
            self._beat()
            try:
                keep_children(self)
            except REDIS_ERRORS as exc:
                if not transient(exc):  # Redis away: _beat said so; the next beat tries again
                    log.warning("could not watch the worker processes' registry entries: %s", exc)
        if self.autoscaler is not None and now >= self._next_scale and not self._signals:
            self._next_scale = now + 1.0
            self._scale()

    #: exit code to leave with once the children are gone (a child's configuration error)
    _give_up: int | None = None

    _done_bursting = False

    def _timeout(self) -> float:
        now = time.monotonic()
        t = self._next_beat - now
        if self.hard:
            t = min(t, self._next_check - now)
        if self.autoscaler is not None:
            t = min(t, self._next_scale - now)
        if len(self._active()) < self.n and not self._signals and not self._done_bursting:
            t = min(t, self._next_start - now)
        return max(0.001, min(t, 1.0))

    def _active(self) -> list[Child]:
        return [c for c in self.children.values() if not c.recycling]

    # ---- children ----------------------------------------------------------------------

    def _start_children(self) -> None:
        """Start missing children, at most STARTS_PER_PASS at a time (signals are looked at
        between passes, and a machine is not flooded with starting interpreters)."""
        if self._signals or self._done_bursting or self._give_up is not None:
            return
        for _ in range(STARTS_PER_PASS):
            if len(self._active()) >= self.n or time.monotonic() < self._next_start:
                return
            self._spawn()

    def _spawn(self) -> Child:
        taken = {c.slot for c in self.children.values() if not c.recycling}  # a replacement takes its slot
        slot = min(set(range(len(taken) + 1)) - taken)
        env = dict(os.environ, **{SUPERVISOR_PID_ENV: str(os.getpid()), SUPERVISOR_ID_ENV: self.id,
                                  SLOT_ENV: str(slot)})
        proc = subprocess.Popen([sys.executable, "-m", "runtime", *self.argv], env=env,
                                preexec_fn=child_setup, close_fds=True)
        child = Child(proc, time.monotonic(), slot=slot)
        self.children[proc.pid] = child
        log.info("started worker process %d", proc.pid)
        return child

    def _on_signal(self, signo: int, pid: int) -> None:
        if signo == signal.SIGUSR1:
            child = self.children.get(pid)
            if child is not None and not child.recycling:
                child.recycling = True
                self.restarts += 1
                log.info("worker process %d recycles; starting its replacement", pid)
                self._start_children()
        elif signo in (signal.SIGTERM, signal.SIGINT):
            self._signals += 1
            log.warning("supervisor got signal %d: %s", signo,
                        "interrupting running jobs" if self._signals > 1 else
                        f"stopping {len(self.children)} worker {plural(len(self.children), 'process', 'processes')}; "
                        "running jobs have "
                        f"{self.settings.grace_s} s to finish")
            # a supervised worker only ever stops gracefully on SIGTERM/SIGINT (they may reach
            # it directly too, e.g. from systemd); SIGUSR2 makes it interrupt its jobs
            forward = signal.SIGTERM if self._signals == 1 else signal.SIGUSR2
            for child in self.children.values():
                try:
                    os.kill(child.pid, forward)
                except ProcessLookupError:
                    pass

    def _reap_children(self) -> None:
        for pid, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self.children[pid]
            lived = time.monotonic() - child.started
            if code not in (0, ExitCode.RECYCLED):  # it did not stop cleanly: its jobs come back now
                how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
                self.take_back(pid, f"{how} after {lived:.1f} s", event={
                    "event": "crash", "reason": f"exit-code-{code}" if code >= 0 else f"signal-{-code}",
                    "alive_s": round(lived, 3)})
            if child.recycling or code == ExitCode.RECYCLED:
                log.info("worker process %d exited after recycling (code %d)", pid, code)
                if not child.recycling:  # it exited before its signal arrived: replace it
                    self.restarts += 1
                self._start_backoff.reset()
                continue
            if self._signals:
                log.info("worker process %d stopped (code %d)", pid, code)
                continue
            if self.burst and code == 0:
                self._done_bursting = True
                continue
            if code == ExitCode.USAGE and lived < MIN_UPTIME_S:
                # bad settings or arguments: every restart would fail the same way
                log.error("worker process %d exited with code %d (bad settings; see its error above): "
                          "not restarting; the supervisor stops", pid, code)
                self._give_up = code
                for other in self.children.values():
                    os.kill(other.pid, signal.SIGTERM)
                continue
            if lived < MIN_UPTIME_S:
                delay = self._start_backoff.next()
                self._next_start = max(self._next_start, time.monotonic() + delay)
                log.error("worker process %d exited with code %d after %.1f s; next start in %.1f s",
                          pid, code, lived, self._next_start - time.monotonic())
            else:
                self._start_backoff.reset()
                log.error("worker process %d exited with code %d after %.0f s; restarting it", pid, code, lived)
            self.restarts += 1

    def _scale(self) -> None:
        """One autoscaling decision (runtime.supervisor.autoscale), recorded as an event;
        a step down drains an idle process (SIGUSR1: it stops claiming, and finishes any
        job it took since, however long it takes), never a busy one."""
        assert self.autoscaler is not None
        active = self._active()
        queues = self.settings.queues
        latency = max(queue_latency(self.redis, self.keys, queues).values(), default=0.0)
        ids = [w for w in self.broker.registry.ids() if host_pid(w)[0] == self.host and host_pid(w)[1] in self.children]
        entries = self.broker.registry.fields(ids, "jobs_done", "running")
        done = sum(int(d or 0) for d, _ in entries)
        running: dict[int, int] = {}  # pid -> jobs claimed (started or prefetched); absent: no entry yet
        for wid, (_, r) in zip(ids, entries):
            pid = host_pid(wid)[1] or 0
            running[pid] = running.get(pid, 0) + len(json.loads(r or "[]"))
        idle = sorted((c for c in active if running.get(c.pid) == 0), key=lambda c: -c.started)
        drain = self.autoscaler.drain_s(backlog(self.redis, self.keys, queues), done)
        want, reason, detail = self.autoscaler.decide(len(active), latency, drain, idle=len(idle))
        if want < len(active):
            victim = idle[0]  # the youngest idle process
            victim.recycling = True  # draining: neither counted nor replaced
            os.kill(victim.pid, signal.SIGUSR1)
            detail += f"; worker process {victim.pid} drains (it ran no job when chosen)"
        if reason:
            log.info("autoscale %s: %s", reason, detail)
            self.broker.registry.record_event({"event": "scale", "at": time.time(), "host": self.host,
                                               "pid": os.getpid(), "supervisor": self.id, "reason": reason,
                                               "detail": detail})
        self.n = want

    def worker_ids(self, pid: int) -> list[str]:
        """Registry ids of the worker process ``pid`` of this host (normally one)."""
        return [w for w in self.broker.registry.ids() if host_pid(w) == (self.host, pid)]

    def take_back(self, pid: int, why: str, unstarted: list[str] | None = None,
                   ids: list[str] | None = None, event: dict[str, Any] | None = None) -> tuple[int, int]:
        """Requeue (or fail, worker-lost) the jobs the dead child ``pid`` (registry ``ids``,
        looked up when not given) was running, now; ``unstarted`` ones (prefetched) without
        counting a lost worker against them (looked up when not given)."""
        try:
            ids = self.worker_ids(pid) if ids is None else ids
            if not ids:
                return 0, 0
            requeued, failed = self.reaper.take_back(ids, f"its worker process {why}", unstarted, event, self.id)
        except REDIS_ERRORS as exc:
            log.warning("could not requeue the jobs of worker process %d (%s); the reaper will", pid, exc)
            return 0, 0
        if requeued or failed:
            log.warning("worker process %d %s: %d jobs requeued, %d failed (worker-lost)", pid, why, requeued, failed)
        return requeued, failed

    def kill_child(self, child: Child) -> None:
        """SIGKILL ``child`` with whatever its jobs started (its process group); reaped."""
        kill_group(child, signal.SIGKILL)
        child.proc.wait()

    # ---- registry ----------------------------------------------------------------------

    def _beat(self) -> None:
        s = self.settings
        self._next_beat = time.monotonic() + s.heartbeat_interval_s
        entry = {
            "id": self.id, "kind": "supervisor", "host": self.host, "pid": str(os.getpid()),
            "pid_started": repr(self._started), "queues": ",".join(s.queues),
            "processes": str(self.n), "started_at": repr(self.started_at), "heartbeat_at": repr(time.time()),
            "rss_bytes": str(rss_of(self._proc)),
            "state": "stopping" if self._signals else "running",
            "children": json.dumps([{"pid": c.pid, "recycling": c.recycling} for c in self.children.values()]),
            "restarts": str(self.restarts), "kills": str(self.kills),
            "mem_limit_bytes": str(s.mem_limit_bytes or ""), "mem_hard_limit_bytes": str(self.hard or ""),
        }
        try:
            self.broker.registry.write_entry(self.id, entry)
        except REDIS_ERRORS as exc:
            log.warning("supervisor heartbeat failed: %s", exc)

    def _deregister(self) -> None:
        try:
            self.broker.reap(stopping=self.id)
        except REDIS_ERRORS as exc:
            log.warning("could not deregister the supervisor (%s)", exc)
