"""The watchdog: a small process outside each worker process, that the GIL cannot stop.

A worker's heartbeat is a native thread, but a C call that holds the GIL (a catastrophic
regex, a long numpy call) stops every thread of its process: its registry entry would
expire, another worker would take its jobs and run them a second time while the first
run goes on, and a job past its timeout that never yields could not be stopped. So every
worker process started by ``runtime worker`` starts this one beside it (its child; the
``watchdog`` setting turns it off), which every ``heartbeat_interval_s``:

- keeps the worker's registry entry alive (its TTL; written back from what it last read
  when it is gone) and extends the claims of the jobs it holds (on the Redis clock: those
  its last heartbeat listed, and those with a start record), while the worker process
  lives: a worker whose heartbeat stalls is not taken for dead while its process is
  alive. It follows a Sentinel master that moved, and on a Redis Cluster the master of
  each hash slot;
- reads the start records of the jobs it runs (runtime.worker.starts: written before
  each job runs, with when its timeout ends); one still running ``HARD_GRACE_S`` past
  its timeout (the greenlet timeout could not fire: it never yields) is past its hard
  deadline. The watchdog then marks it
  (``hard_timeout``: the job ends ``timeout``, not requeued, when its worker's jobs are
  taken back: reap.lua), takes the start record of the others (they are requeued
  without a charge, each to run alone next time: one of them may be the job that held
  the hub), kills the worker process (SIGKILL), takes its jobs back at once
  (runtime.worker.takeback: the marked one ends ``timeout``, the others are requeued)
  and exits;
- exits when the worker process is gone (it is reparented) or asks it to (SIGTERM).

It is run as ``python -I -S runtime/watch.py`` with its configuration as JSON on its
standard input (written by runtime.worker.watching; it holds the Redis password): the standard
library only, so that its memory stays small (about 10 MB RSS, against 30 MB or more for
a Python process that imports redis-py). It speaks the Redis protocol itself
(runtime.resp: RESP2, AUTH, SELECT, EVAL; TCP, unix sockets, TLS, Sentinel to find the
master, and a Redis Cluster: each call to the master of its keys' hash slot). Each
script call touches one slot: the registry entry (:data:`KEEP`, the deployment's slot),
then the claims of each queue (:data:`CLAIMS`, the queue's), one call each.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

try:
    from .resp import RedisError, client
except ImportError:  # run as a script (python -I -S runtime/watch.py): its folder is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from resp import RedisError, client  # type: ignore[import-not-found,no-redef]
    del sys.path[0]

TYPE_CHECKING = False  # typing is not imported at run time: it is ~1 MB of this process's RSS
if TYPE_CHECKING:
    from typing import Any

#: How long past its timeout a job that does not yield may run before its worker is
#: killed, seconds: the greenlet timeout interrupts a job that yields at its timeout; the
#: heartbeat's report of a job that does not (logged, stored as ``overrun``) comes two
#: heartbeats after; then this.
HARD_GRACE_S = 5.0

#: KEYS: the registry entry, the set of workers (runtime.broker.keys.Keys.watched). ARGV:
#: entry TTL (ms), the worker's id, then the entry's fields and values as the watchdog
#: last read them. Keeps a live process's entry (written again from those fields when it
#: is gone: a failover to a replica that missed it, a heartbeat the GIL stalls); returns
#: the entry's fields and values (for the next call; none when it is gone and none were
#: given: then no claim is kept either).
KEEP = """
redis.call('SREM', KEYS[2], '')  -- a write first: on a full Redis too
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  if #ARGV < 4 then return {} end
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""

#: KEYS: the worker's running set of one queue and the queue's inflight zset (one hash
#: slot). ARGV: visibility timeout (s), the job key prefix, then the ids of the jobs its
#: last heartbeat listed (the entry's ``running``: :func:`known_ids`). Extends the claims
#: the worker holds (on the Redis clock); returns, for each job it started
#: (runtime.worker.starts) with a timeout, its id and deadline (UNIX s, the worker's clock).
CLAIMS = """
local t = redis.call('TIME')
local deadline = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])) * 1000)
local known = {}  -- the jobs its last heartbeat listed (prefetched ones too)
for i = 3, #ARGV do known[ARGV[i]] = true end
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local q, rest = string.match(id, '^([^:]*):(.*)$')  -- its key: tagged_id
  local f = redis.call('HMGET', ARGV[2] .. (q and '{' .. q .. '}:' .. rest or id), 'began', 'attempt', 'deadline')
  local started = f[1] and f[1] == f[2]
  -- only claims it holds: one it does not know of (a lost reply; its start record says
  -- "released": runtime.broker.release_unknown) must expire and come back
  if started or known[id] then redis.call('ZADD', KEYS[2], 'XX', deadline, id) end
  if started and f[3] then
    out[#out + 1] = id
    out[#out + 1] = f[3]
  end
end
return out
"""

#: KEYS: the hashes of jobs of one queue, the overrun one first when it is of that queue.
#: ARGV: the message, then '1' when KEYS[1] is the overrun job. Marks that one
#: (hard_timeout); spares the others (their start record says ``spared``: requeued
#: uncharged, runtime.broker.lost.mark_lost) but has each run alone next time: the job
#: that held the hub, and kept the overrun one from its timeout, may be among them, and
#: alone it starves nobody. (A write that changes nothing first: on a full Redis too.)
MARK = """
redis.call('HDEL', KEYS[1], 'no-such-field')
local first = 1
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'hard_timeout', ARGV[1])
  first = 2
end
for i = first, #KEYS do redis.call('HSET', KEYS[i], 'began', 'spared', 'alone', '1') end
return #KEYS
"""


#: KEYS: the dead worker's ``{p}:reaping:{id}`` (runtime.broker.registry.Registry.claim_lost).
#: ARGV: the claimant (:func:`claimant`), its expiry (s). Claims the worker about to be
#: killed for the take-back that follows (runtime.worker.takeback), so that the reapers
#: that see it dead leave its jobs, and its ``kill`` event, to that one.
CLAIM = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])"


def claimant(worker_id: str) -> str:
    """Who the watchdog of ``worker_id`` and its take-back claim that worker as."""
    return f"watchdog.{worker_id}"


def known_ids(entry: list[str]) -> list[str]:
    """The ids of the jobs a registry entry (its fields and values, as KEEP returns them)
    lists in ``running``: those its worker's last heartbeat knew of."""
    fields = dict(zip(entry[::2], entry[1::2]))
    try:
        rows = json.loads(fields.get("running") or "[]")
    except ValueError:
        return []
    return [r["id"] for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)] \
        if isinstance(rows, list) else []


def mark_calls(job_id: str, running: list[str], prefix: str) -> list[tuple[list[str], str]]:
    """The MARK calls for overrun job ``job_id`` among its worker's ``running`` jobs (ids),
    one per queue (a call: one hash slot): (KEYS, '1' when the first key is the overrun
    job's, else '0'). ``prefix``: the job key prefix."""
    by_queue: dict[str, list[str]] = {job_id.partition(":")[0]: [prefix + tagged_id(job_id)]}
    for other in running:
        if other != job_id:
            by_queue.setdefault(other.partition(":")[0], []).append(prefix + tagged_id(other))
    return [(keys, "1" if i == 0 else "0") for i, keys in enumerate(by_queue.values())]


def _say(line: str) -> None:
    """One line on stderr (the worker's log stream)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def overrun(started: list[str], now: float) -> tuple[str, float] | None:
    """The first job of ``started`` (id, deadline, id, deadline...: KEEP's reply) past its
    hard deadline (its deadline plus HARD_GRACE_S), as (id, deadline); or None."""
    for i in range(0, len(started) - 1, 2):
        try:
            deadline = float(started[i + 1])
        except ValueError:
            continue
        if now > deadline + HARD_GRACE_S:
            return started[i], deadline
    return None


def hard_timeout_message(deadline: float) -> str:
    """What a job killed at its hard deadline (``deadline``: when its timeout ended) says."""
    return (f"ran {time.time() - deadline:.1f} s past its timeout (the hard deadline is {HARD_GRACE_S:g} s "
            "after it) without yielding to the gevent hub: its worker process was killed by its watchdog")


def alive(pid: int) -> bool:
    """Is ``pid`` still this process's parent (a worker that died reparents us)?"""
    return os.getppid() == pid


def watch(conf: dict[str, Any]) -> int:
    """The watchdog's loop (see the module docstring); returns its exit code."""
    pid, interval = int(conf["pid"]), float(conf["interval_s"])
    prefix = conf["job_key_prefix"]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the worker: it stops us
    r = client(conf["redis"])
    said = False
    entry: list[str] = []  # the registry entry's fields and values, as last read
    while not stop and alive(pid):
        try:
            r.follow_master()
            started, entry = keep(r, conf, entry)
            said = False
        except (OSError, RedisError) as exc:
            if not said:
                _say(f"runtime watchdog of worker process {pid}: Redis: {exc}")
                said = True
            started = []
        job = overrun(started, time.time())
        if job is not None:
            if conf.get("take_back"):
                _claim(r, conf)
            _kill(r, pid, job, started[::2], prefix)
            _take_back(conf, pid)
            return 0
        time.sleep(interval)
    r.close()
    return 0


def keep(r: Any, conf: dict[str, Any], entry: list[str]) -> tuple[list[str], list[str]]:
    """One beat through client ``r``: KEEP the registry entry (``entry``: its fields and
    values as last read), then the CLAIMS of each queue. Returns (the started jobs: id,
    deadline, id, deadline...; the entry as read now, or ``entry`` when it is gone).
    Raises RedisError, OSError."""
    keys = conf["keys"]
    now = r.call("EVAL", KEEP, "2", *keys["entry"], str(int(conf["ttl_ms"])), conf["worker_id"], *entry)
    if not now:  # gone, and nothing to write back: its claims are not kept either
        return [], entry
    known = known_ids(now)
    started: list[str] = []
    for pair in keys["queues"]:
        started += r.call("EVAL", CLAIMS, "2", *pair, repr(conf["visibility_s"]), conf["job_key_prefix"], *known)
    return started, now


def tagged_id(job_id: str) -> str:
    """A job id as its Redis keys write it (runtime.broker.keys): ``queue:rest`` as
    ``{queue}:rest``, the hash tag of its queue; an id without a queue (made by hand) as it
    is. Defined here, where the watchdog process (which imports no other module of
    runtime) needs it too."""
    queue, sep, rest = job_id.partition(":")
    return f"{{{queue}}}:{rest}" if sep else job_id


def _claim(r: Any, conf: dict[str, Any]) -> None:
    """CLAIM the worker for its take-back (logged when Redis refuses: a reaper then may
    take its jobs back first, recording a ``lost`` event rather than ``kill``)."""
    try:
        r.call("EVAL", CLAIM, "1", conf["keys"]["reaping"][0], claimant(conf["worker_id"]), "60")
    except (OSError, RedisError) as exc:
        _say(f"runtime watchdog: could not claim worker {conf['worker_id']} for its take-back: {exc}")


def _kill(r: Any, pid: int, job: tuple[str, float], running: list[str], prefix: str) -> int:
    """Mark ``job`` (id, deadline) as past its hard deadline, spare the other ``running``
    jobs (one MARK call per queue), kill the worker process ``pid``."""
    job_id, deadline = job
    msg = hard_timeout_message(deadline)
    for keys, first in mark_calls(job_id, running, prefix):
        try:
            r.call("EVAL", MARK, str(len(keys)), *keys, msg, first)
        except (OSError, RedisError) as exc:
            _say(f"runtime watchdog: could not mark job {job_id} and its neighbours: {exc}")
    _say(f"runtime watchdog: job {job_id} {msg}; killing worker process {pid}")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


def _take_back(conf: dict[str, Any], pid: int) -> None:
    """Once the killed worker is gone (we are reparented), take its jobs back now, as a
    reaper would (runtime.worker.takeback, a Python process of its own: this one imports
    nothing for it), unless a supervisor does (``conf["take_back"]`` false)."""
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not conf.get("take_back"):
        return
    import subprocess
    try:
        subprocess.run([sys.executable, "-m", "runtime.worker.takeback"], input=json.dumps(conf).encode(),
                       timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        _say(f"runtime watchdog: could not take back the jobs of worker process {pid}: {exc}")


def main() -> int:
    """Read the configuration, then :func:`watch`; a worker that stopped before it wrote
    the whole configuration (it failed at start) leaves nothing to watch: exit 0."""
    try:
        conf = json.loads(sys.stdin.read())
    except ValueError:
        return 0
    return watch(conf)


if __name__ == "__main__":
    sys.exit(main())
