"""Whether a worker reaches its Redis, said once when it changes.

Every part of a worker that calls Redis (claim loop, wake-up wait, heartbeat thread,
recorder, reaper) reports here: the first failure that goes away by itself (a lost
connection, a read-only replica, a loading server: runtime.broker.transient) logs one
error naming the server; the next success logs one line saying how long it was gone.
In between, each part retries on its own backoff and logs nothing more (one line a
second per part made a Redis restart unreadable).
"""

from __future__ import annotations

import logging
import time

import redis

from ..broker import transient
from ..broker.connection import cluster_node_error, full, misrouted
from ..redact import mask

log = logging.getLogger("runtime.worker")


class RedisLink:
    """The state of one worker's connection to ``where`` (a URL, masked when logged).
    Safe to call from the hub and from native threads (the worst race logs twice).

    Each part reports under its own name (``doing``): Redis is back once every part that
    failed has succeeded again, so a full Redis, which refuses the heartbeat's writes but
    answers a claim that finds nothing, is not said to come and go every second."""

    def __init__(self, where: str) -> None:
        self.where = mask(where)
        #: time.monotonic() when Redis was lost, None while it answers
        self.down_since: float | None = None
        #: the parts whose last call failed
        self.failing: set[str] = set()
        #: how many times Redis was lost (a reply may have been lost with each)
        self.outages = 0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException, doing: str) -> bool:
        """A call made while ``doing`` (e.g. "claiming jobs") failed with ``exc``. Returns
        True when the error is transient (the caller retries; this logs it once), False
        when it is not (the caller handles and logs it)."""
        if not transient(exc):
            return False
        self.failing.add(doing)
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            if full(exc):
                log.error("Redis at %s is full (its used memory is over maxmemory): it refuses writes, "
                          "seen while %s; retrying until memory is freed or maxmemory raised (runtime info); "
                          "running jobs go on and their outcomes are kept until then", self.where, doing)
            else:
                log.error("lost Redis at %s while %s (%s: %s); retrying until it is back; running jobs go on "
                          "and their outcomes are kept until then", self.where, doing, type(exc).__name__,
                          mask(str(exc)))
        return True

    def ok(self, doing: str) -> None:
        """A call made while ``doing`` succeeded: once no part fails, say Redis is back."""
        if not self.failing:
            return
        self.failing.discard(doing)
        since = self.down_since
        if not self.failing and since is not None:
            self.down_since = None
            log.warning("Redis at %s is back after %.1f s", self.where, time.monotonic() - since)

    def refuse_misrouted(self, exc: BaseException, client: redis.Redis) -> None:
        """Raise ConfigError when ``exc`` is a Redis Cluster node refusing a command of
        ``client``, which does not route by hash slot (the URL is not ``redis+cluster://``:
        runtime.broker.connection.misrouted): a worker cannot run so, however long it tries."""
        if misrouted(exc, client):
            raise cluster_node_error(self.where) from None
