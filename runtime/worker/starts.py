"""The record a job's start leaves in Redis before its task runs: what tells a reaper
whether a dead worker's job had started (charged a lost life) or only been claimed
(prefetched, or handed to it: requeued without a charge).

The record is ``began`` = the attempt number, on the job's hash. It is sent before the
task's first line runs, on a connection of its own that asked Redis for no replies
(``CLIENT REPLY OFF``): one ``send()`` of about 60 bytes a job and no round trip. Bytes a
process has sent reach Redis even when it is killed or crashes right after (the kernel
sends what the socket holds), so a job that kills its worker at once is recorded as
started. A record lost with the connection (Redis restarted, the connection dropped)
only means that job, if its worker dies before it ends, is requeued uncharged: the
heartbeat's list of running jobs (a second old at most) is read as well.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
import redis

from ..broker import RedisBroker
from ..broker.direct import pack

log = logging.getLogger("runtime.worker")


class StartRecords:
    """Sends the start records of one worker's jobs (from its hub only): :meth:`open` at
    start, :meth:`began` per job, :meth:`close` at stop."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._conn: Any = None
        self._ready = False  # connected, replies off
        self._connecting: Any = None  # the greenlet connecting again, while one does
        self._said = False

    def open(self) -> None:
        """Connect (a round trip; blocks this greenlet). Never raises: a failure is logged
        once, and the next record connects again."""
        try:
            if self._conn is None:
                self._conn = self.broker.redis.connection_pool.make_connection()
            self._conn.connect()
            self._conn.send_command("CLIENT", "REPLY", "OFF", check_health=False)
            self._ready, self._said = True, False
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
        finally:
            self._connecting = None

    def began(self, job_id: str, attempt: int) -> None:
        """Record that attempt ``attempt`` of ``job_id`` begins running now (one send, no
        wait). Never raises a Redis error: with no connection, the record is skipped and
        another greenlet connects again."""
        if not self._ready:
            if self._connecting is None:
                self._connecting = gevent.spawn(self.open)
            return
        try:
            self._conn.send_packed_command(pack(self._conn, [("HSET", self.broker.keys.job(job_id), "began", attempt)]),
                                           check_health=False)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
        except BaseException:  # a kill mid-send: the stream may hold half a command
            self.close()
            raise

    def _failed(self, exc: BaseException) -> None:
        self.close()
        if not self._said:
            self._said = True
            log.warning("start records not sent (%s): a job of this worker lost with it while running "
                        "is requeued without a charge", exc)

    def close(self) -> None:
        """Drop the connection (the next record connects again)."""
        self._ready = False
        if self._conn is not None:
            self._conn.disconnect()
