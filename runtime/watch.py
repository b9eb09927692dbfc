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
  alive. It follows a Sentinel master that moved;
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
a Python process that imports redis-py). It speaks the Redis protocol itself (RESP2:
AUTH, SELECT, EVAL; TCP, unix sockets, TLS, and Sentinel to find the master).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

TYPE_CHECKING = False  # typing is not imported at run time: it is ~1 MB of this process's RSS
if TYPE_CHECKING:
    from typing import Any

#: How long past its timeout a job that does not yield may run before its worker is
#: killed, seconds: the greenlet timeout interrupts a job that yields at its timeout; the
#: heartbeat's report of a job that does not (logged, stored as ``overrun``) comes two
#: heartbeats after; then this.
HARD_GRACE_S = 5.0

#: KEYS: the registry entry, the set of workers, then per queue it serves its running set
#: and the queue's inflight zset (runtime.worker.watching.watched_keys). ARGV:
#: entry TTL (ms), visibility timeout (s), the job key prefix, the worker's id, then the
#: entry's fields and values as the watchdog last read them. Keeps a live process's entry (written again from
#: those fields when it is gone: a failover to a replica that missed it, a heartbeat the
#: GIL stalls) and its claims; returns, for each job it started (runtime.worker.starts)
#: with a timeout, its id and deadline (UNIX s, the worker's clock), then the entry's
#: fields and values after a '' (for the next call).
KEEP = """
redis.call('SREM', KEYS[2], '')  -- a write first: on a full Redis too
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  if #ARGV < 6 then return {''} end
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[4])
end
local t = redis.call('TIME')
local deadline = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[2])) * 1000)
local known = {}  -- the jobs its last heartbeat listed (prefetched ones too)
local ok, rows = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'running') or '[]')
if ok and type(rows) == 'table' then
  for _, r in ipairs(rows) do
    if type(r) == 'table' and type(r.id) == 'string' then known[r.id] = true end
  end
end
local out = {}
for k = 3, #KEYS, 2 do
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[k])) do
    local q, rest = string.match(id, '^([^:]*):(.*)$')  -- its key: tagged_id
    local f = redis.call('HMGET', ARGV[3] .. (q and '{' .. q .. '}:' .. rest or id), 'began', 'attempt', 'deadline')
    local started = f[1] and f[1] == f[2]
    -- only claims it holds: one it does not know of (a lost reply; its start record says
    -- "released": runtime.broker.release_unknown) must expire and come back
    if started or known[id] then redis.call('ZADD', KEYS[k + 1], 'XX', deadline, id) end
    if started and f[3] then
      out[#out + 1] = id
      out[#out + 1] = f[3]
    end
  end
end
out[#out + 1] = ''
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
"""

#: KEYS: the overrun job's hash, then the hashes of the worker's other running jobs.
#: ARGV: the message. Marks the one (hard_timeout); spares the others (their start record
#: says ``spared``: requeued uncharged, runtime.broker.lost.mark_lost) but has each
#: run alone next time: the job that held the hub, and
#: kept the overrun one from its timeout, may be among them, and alone it starves nobody.
#: (A write that changes nothing first: on a full Redis too.)
MARK = """
redis.call('HDEL', KEYS[1], 'no-such-field')
redis.call('HSET', KEYS[1], 'hard_timeout', ARGV[1])
for i = 2, #KEYS do redis.call('HSET', KEYS[i], 'began', 'spared', 'alone', '1') end
return #KEYS
"""


class RedisError(Exception):
    """An error reply, or a connection that failed."""


class Resp:
    """A minimal Redis client: one connection, one command at a time (RESP2)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.sock: socket.socket | None = None
        self.buf = b""
        self.addr: tuple[str, int] | None = None  # the master's, with Sentinels

    def _open(self) -> None:
        c = self.conf
        timeout = float(c.get("timeout_s", 5.0))
        if c.get("path"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(c["path"])
        else:
            if c.get("sentinels"):
                host, port = self.addr = self._master(c["sentinels"], c["service"], timeout)
            else:
                host, port = c["host"], int(c["port"])
            sock = socket.create_connection((host, port), timeout)
            if c.get("ssl"):
                import ssl
                ctx = ssl.create_default_context()
                if c.get("ssl_cert_reqs") in ("none", None):
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock, self.buf = sock, b""
        if c.get("password"):
            self.call("AUTH", *([c["username"]] if c.get("username") else []), c["password"])
        if c.get("db"):
            self.call("SELECT", str(c["db"]))

    def follow_master(self) -> None:
        """With Sentinels: ask them which server is the master; when it moved, drop the
        connection (the next call opens one to the new master). Redis's own READONLY
        comes only when the old master is demoted, seconds later."""
        c = self.conf
        if not c.get("sentinels") or self.sock is None:
            return
        try:
            now = self._master(c["sentinels"], c["service"], float(c.get("timeout_s", 5.0)))
        except (OSError, RedisError):
            return
        if now != self.addr:
            self.close()

    @staticmethod
    def _master(sentinels: list[list[Any]], service: str, timeout: float) -> tuple[str, int]:
        for host, port in sentinels:
            s = Resp({"host": host, "port": port, "timeout_s": timeout})
            try:
                addr = s.call("SENTINEL", "get-master-addr-by-name", service)
            except (OSError, RedisError):
                continue
            finally:
                s.close()
            if addr:
                return str(addr[0]), int(addr[1])
        raise RedisError(f"no Sentinel names a master for {service!r}")

    def call(self, *args: str) -> Any:
        """Send one command and return its reply; raises RedisError or OSError (the
        connection is dropped: the next call opens another)."""
        try:
            if self.sock is None:
                self._open()
            assert self.sock is not None
            out = [b"*%d\r\n" % len(args)]
            for a in args:
                b = a.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(b), b))
            self.sock.sendall(b"".join(out))
            return self._reply()
        except OSError:
            self.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _more(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise OSError("connection closed by the server")
        self.buf += data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._more()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:40]!r}")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None


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
    keys, prefix = conf["keys"], conf["job_key_prefix"]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the worker: it stops us
    r = Resp(conf["redis"])
    said = False
    entry: list[str] = []  # the registry entry's fields and values, as last read
    while not stop and alive(pid):
        try:
            r.follow_master()
            reply = r.call("EVAL", KEEP, str(len(keys)), *keys, str(int(conf["ttl_ms"])),
                           repr(conf["visibility_s"]), prefix, conf["worker_id"], *entry)
            said = False
        except (OSError, RedisError) as exc:
            if not said:
                _say(f"runtime watchdog of worker process {pid}: Redis: {exc}")
                said = True
            reply = [""]
        cut = reply.index("") if "" in reply else len(reply)
        started, entry = reply[:cut], reply[cut + 1:] or entry
        job = overrun(started, time.time())
        if job is not None:
            _kill(r, pid, job, started[::2], prefix)
            _take_back(conf, pid)
            return 0
        time.sleep(interval)
    r.close()
    return 0


def tagged_id(job_id: str) -> str:
    """A job id as its Redis keys write it (runtime.broker.keys): ``queue:rest`` as
    ``{queue}:rest``, the hash tag of its queue; an id without a queue (made by hand) as it
    is. Defined here, where the watchdog process (which imports no other module of
    runtime) needs it too."""
    queue, sep, rest = job_id.partition(":")
    return f"{{{queue}}}:{rest}" if sep else job_id


def _kill(r: Resp, pid: int, job: tuple[str, float], running: list[str], prefix: str) -> int:
    """Mark ``job`` (id, deadline) as past its hard deadline, spare the other ``running``
    jobs, kill the worker process ``pid``."""
    job_id, deadline = job
    msg = hard_timeout_message(deadline)
    others = [prefix + tagged_id(o) for o in running if o != job_id]
    try:
        r.call("EVAL", MARK, str(1 + len(others)), prefix + tagged_id(job_id), *others, msg)
    except (OSError, RedisError) as exc:
        _say(f"runtime watchdog: could not mark job {job_id}: {exc}")
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
