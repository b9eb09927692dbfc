"""The record a job's start leaves in Redis before its task runs: what tells a reaper
whether a dead worker's job had started (charged a lost life) or only been claimed
(prefetched, or handed to it: requeued without a charge).

The record is ``began`` = the attempt number, on the job's hash, with ``began_at``: when
it was launched (UNIX s, this host's clock, the clock of a job's ``started_at``; the
time of the ``started`` entry reap.lua writes for an attempt lost with its worker), and
``deadline``: when its timeout ends (UNIX s, this host's clock), which the worker's
watchdog enforces from outside the process (runtime.watch). It is sent before the
task's first line runs, on a connection of its own that asked Redis for no replies
(``CLIENT REPLY OFF``): one ``send()`` for the jobs launched in one turn of the hub,
about 90 bytes a job, and no round trip. Bytes a
process has sent reach Redis even when it is killed or crashes right after (the kernel
sends what the socket holds), so a job that kills its worker at once is recorded as
started. A record lost with the connection (Redis restarted, the connection dropped)
only means that job, if its worker dies before it ends, is requeued uncharged: the
heartbeat's list of running jobs (a second old at most) is read as well.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from ..broker import RedisBroker
from ..broker.connection import REDIS_OR_OS_ERRORS
from ..broker.direct import pack
from .slots import RunningJob

log = logging.getLogger("runtime.worker")


class StartRecords:
    """Sends the start records of one worker's jobs (from its hub only): :meth:`open` at
    start, :meth:`launched` per job (runtime.worker.slots calls it), :meth:`close` at stop."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._conns: dict[str, Any] = {}  # server ("" standalone, a node's name on a cluster) -> connection
        self._ready = False  # connected, replies off
        self._pending: list[tuple[str, int, str, str]] = []  # (job id, attempt, began_at, deadline) not yet sent
        self._flusher: Any = None  # the greenlet that sends them, once spawned
        self._said = False

    def open(self) -> None:
        """Connect to the server, or every master of a Redis Cluster (a round trip each;
        blocks this greenlet). Never raises: a failure is logged once, and the next record
        connects again."""
        try:
            if self.broker.clustered:
                for node in self.broker.redis.get_primaries():  # type: ignore[attr-defined]
                    self._connect(node.name, node.redis_connection.connection_pool)
            else:
                self._connect("", self.broker.redis.connection_pool)
            self._ready, self._said = True, False
        except REDIS_OR_OS_ERRORS as exc:
            self._failed(exc)

    def _connect(self, name: str, pool: Any) -> Any:
        """The reply-less connection to server ``name`` (made from ``pool`` the first time)."""
        conn = self._conns.get(name)
        if conn is None:
            conn = self._conns[name] = pool.make_connection()
            conn.connect()
            conn.send_command("CLIENT", "REPLY", "OFF", check_health=False)
        return conn

    def _connection(self, key: str) -> Any:
        """The connection to the server holding ``key``: on a cluster the master of its slot
        (a slot moved since: the record goes to the old master, which refuses it, and the
        job counts as not started, as with a record lost)."""
        if not self.broker.clustered:
            return self._conns[""]
        node = self.broker.redis.get_node_from_key(key)  # type: ignore[attr-defined]
        return self._connect(node.name, node.redis_connection.connection_pool)

    def launched(self, rj: RunningJob) -> None:
        """``rj``'s greenlet is about to be spawned: its record goes out first. The jobs
        launched in one turn of the hub share one send, made by a greenlet spawned before
        theirs (so it runs first). With no connection the records are skipped and that
        greenlet connects again."""
        now = time.time()
        deadline = f"{now + rj.timeout_s:.3f}" if rj.timeout_s else ""
        self._pending.append((rj.id, rj.claimed.attempt, f"{now:.6f}", deadline))
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush)

    def _flush(self) -> None:
        try:
            if not self._ready:
                self.open()
            pending, self._pending = self._pending, []
            if self._ready and pending:
                by_conn: dict[Any, list[tuple[Any, ...]]] = {}
                for job_id, attempt, at, deadline in pending:
                    key = self.broker.keys.job(job_id)
                    more = ("deadline", deadline) if deadline else ()
                    call = ("HSET", key, "began", attempt, "began_at", at, *more)
                    by_conn.setdefault(self._connection(key), []).append(call)
                for conn, calls in by_conn.items():
                    conn.send_packed_command(pack(conn, calls), check_health=False)
        except REDIS_OR_OS_ERRORS as exc:
            self._failed(exc)
        except BaseException:  # a kill mid-send: the stream may hold half a command
            self.close()
            raise
        finally:
            self._flusher = None

    def _failed(self, exc: BaseException) -> None:
        self.close()
        if not self._said:
            self._said = True
            log.warning("start records not sent (%s): a job of this worker lost with it while running "
                        "is requeued without a charge", exc)

    def close(self) -> None:
        """Drop the connections (the next record connects again)."""
        self._ready = False
        for conn in self._conns.values():
            conn.disconnect()
        self._conns.clear()
