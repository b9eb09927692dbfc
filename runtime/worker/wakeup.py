"""An idle worker's wait for work: blocked on its jobs list and its queues' wake-up lists.

The claim loop blocks here itself (a greenlet of its own for the wait cost a spawn and
two more hub hops before a handed job could start). :meth:`Wakeup.end` ends a wait from
any greenlet (a stop) by raising a private BaseException in the waiting one, only while
it still waits. The wait has a Redis connection of its own: the blocked call holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gevent

from ..broker import RedisBroker
from ..broker.connection import disconnect, own_client
from ..messages import Claimed
from .link import RedisLink

log = logging.getLogger("runtime.worker")


#: What the wake-up wait reports to the worker's RedisLink as doing.
WAITING = "waiting for jobs"

class _EndWait(BaseException):
    """Raised in the waiting greenlet by ``end`` (a BaseException: nothing between the wait
    and :meth:`Wakeup.wait` may take it for an error of its own)."""


class Wakeup:
    """The wait of worker ``worker_id`` for work on ``queues``."""

    def __init__(self, broker: RedisBroker, worker_id: str, queues: Sequence[str],
                 link: RedisLink | None = None) -> None:
        self.broker = broker
        self.link = link
        self.worker_id = worker_id
        self.queues = queues
        self._conn = self.client = own_client(broker.redis)
        self._hub = gevent.get_hub()
        #: the greenlet blocked in :meth:`wait`, or None
        self.waiting: Any = None

    def wait(self, timeout_s: float) -> Claimed | None:
        """Block up to ``timeout_s`` for a job handed to this worker (returned, already
        claimed for it) or a wake-up (None: claim now). Errors are logged (None)."""
        self.waiting = gevent.getcurrent()
        try:
            got = self.broker.wait_for_wakeup(self._conn, self.worker_id, self.queues, timeout_s)
        except _EndWait:
            disconnect(self._conn)  # its BLPOP reply is still pending
            return None
        except Exception as exc:  # noqa: BLE001 - Redis down: the claim loop backs off
            if self.link is None or not self.link.failed(exc, WAITING):
                log.error("wake-up wait failed (%s)", exc)
            disconnect(self._conn)
            gevent.sleep(0.1)
            return None
        finally:
            self.waiting = None
        if self.link is not None:
            self.link.ok(WAITING)
        return got

    def end(self) -> None:
        """End the current wait, if any (from any greenlet of this hub)."""
        if self.waiting is not None:
            self._hub.loop.run_callback(self._throw, self.waiting)

    def _throw(self, g: Any) -> None:
        """In the hub: end the wait, if it is still the one ``end`` saw."""
        if self.waiting is g:
            g.throw(_EndWait())

    def close(self) -> None:
        """Drop the wait's connections."""
        disconnect(self._conn)
