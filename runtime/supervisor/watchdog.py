"""The hard memory ceiling and the watchdog of each child, enforced from outside the
worker processes.

The supervisor is its children's watchdog (runtime.watch, which an unsupervised worker
starts as a process of its own): every heartbeat it keeps the registry entry and the
claims of each child whose process lives, and kills a child whose job runs past its hard
deadline (:func:`keep_children`).

Every ``mem_check_interval_s`` the supervisor reads each child's RSS (psutil); a child
above ``Settings.hard_limit_bytes`` is killed with its whole process group (SIGKILL: a
job holding the GIL cannot stop it), and its jobs are taken back at once through the
reaper (worker-lost, so the poison rule applies: a job that kills its worker
``max_lost`` times ends failed). A ``kill`` event records the RSS, the limit and the
jobs; the supervisor claims the worker before the kill
(runtime.broker.registry.Registry.claim_lost), so the reapers that see it dead record
no second event.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..broker import RedisBroker
from ..broker.connection import REDIS_ERRORS
from ..broker.lost import Lost, mark_lost
from ..process import host_pid, rss_of
from ..units import fmt_bytes
from .children import Child

log = logging.getLogger("runtime.supervisor")


class Watched(Protocol):
    """What the watchdog needs of the supervisor."""

    id: str
    host: str
    hard: int | None
    broker: RedisBroker
    children: dict[int, Child]
    kills: int
    restarts: int

    def worker_ids(self, pid: int) -> list[str]: ...

    def take_back(self, pid: int, why: str, unstarted: list[str] | None = None,
                  ids: list[str] | None = None) -> tuple[int, int]: ...

    def kill_child(self, child: Child) -> None: ...


def enforce_hard_limit(sup: Watched) -> None:
    """Kill every child over the hard limit and take its jobs back (see the module)."""
    assert sup.hard is not None
    for pid, child in list(sup.children.items()):
        rss = rss_of(child.pid)
        if rss <= sup.hard:  # (0: it cannot be read, gone or no /proc)
            continue
        note = f"its worker process was killed: RSS {fmt_bytes(rss)} over the hard limit {fmt_bytes(sup.hard)}"
        log.error("worker process %d uses %s, over the hard limit %s: killing it", pid, fmt_bytes(rss),
                  fmt_bytes(sup.hard))
        wids: list[str] | None
        try:  # before the kill: any reaper that takes them back (others watch the pid) says why
            wids = sup.worker_ids(pid)
            # and claimed, so that the reapers that see it dead leave its jobs and its event to us
            ours = sup.broker.registry.claim_lost(wids, sup.id)
            lost = mark_lost(sup.broker, wids, note)
        except REDIS_ERRORS as exc:
            log.warning("could not mark the jobs of worker process %d (%s)", pid, exc)
            wids, ours, lost = None, [], Lost([], [], {})
        sup.kill_child(child)
        del sup.children[pid]
        sup.kills += 1
        sup.restarts += 1
        requeued, failed = sup.take_back(pid, "was killed over the hard limit", lost.unstarted, wids)
        if wids and not ours:  # it died meanwhile, and a reaper took its jobs back: its event says so
            continue
        sup.broker.registry.record_event({
            "event": "kill", "pid": pid, "host": sup.host, "worker": wids[0] if wids else None, "at": time.time(),
            "reason": "mem-hard-limit", "detail": note, "rss_bytes": rss, "limit_bytes": sup.hard,
            "running": [{"id": j, "path": p} for j, p in lost.paths.items()], "unstarted": lost.unstarted,
            "requeued": requeued, "failed": failed, "supervisor": sup.id})



def keep_children(sup: Watched) -> None:
    """runtime.watch's work for each child (see the module docstring): keep its entry and
    claims alive while it lives; kill one whose job is past its hard deadline, that job
    marked to end ``timeout`` and the others spared (the kill is then reaped as a crash)."""
    if not sup.broker.settings.watchdog:
        return
    registered = sup.broker.registry.ids()  # once a beat, for every child
    for pid, child in list(sup.children.items()):
        for wid in (w for w in registered if host_pid(w) == (sup.host, pid)):
            _keep_child(sup, pid, child, wid)


def _keep_child(sup: Watched, pid: int, child: Child, wid: str) -> None:
    """runtime.watch.keep for worker ``wid`` of child ``pid``: KEEP its entry, then the
    CLAIMS of each queue (one round trip: one call per hash slot); kill it when a job of
    it is past its hard deadline."""
    from .. import watch
    s, keys, r = sup.broker.settings, sup.broker.keys, sup.broker.redis
    kept = keys.watched(wid, s.queues)
    entry = r.eval(watch.KEEP, 2, *kept["entry"], int(s.worker_ttl_s * 1000), wid)
    if not entry:
        return
    known = watch.known_ids([str(v) for v in entry])
    pipe = r.pipeline(transaction=False)
    for pair in kept["queues"]:  # (a cluster pipeline has no eval method: the command as it is)
        pipe.execute_command("EVAL", watch.CLAIMS, 2, *pair, repr(s.visibility_timeout_s),  # type: ignore[no-untyped-call]
                             keys.job(""), *known)
    started = [str(v) for reply in pipe.execute() for v in reply]
    job = watch.overrun(started, time.time())
    if job is None:
        return
    msg = watch.hard_timeout_message(job[1])
    for mark, first in watch.mark_calls(job[0], started[::2], keys.job("")):
        r.eval(watch.MARK, len(mark), *mark, msg, first)
    log.error("worker process %d: job %s %s; killing it", pid, job[0], msg)
    sup.kill_child(child)
