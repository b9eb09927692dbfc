"""What a client and a worker are built from: one connection, broker, store and chain.

:func:`build` makes them from settings; a worker builds its parts once and hands them to
the client its tasks queue jobs with, so a process holds one of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from ..broker import RedisBroker, connect
from ..middleware import Chain
from ..settings import Settings
from ..store import JobStore, RedisJobStore


@dataclass(frozen=True)
class Parts:
    """The settings, the Redis client (str responses), the broker, the job store (Redis, or
    MongoDB when ``mongodb_url`` is set) and the middleware chain."""

    settings: Settings
    redis: redis.Redis
    broker: RedisBroker
    store: JobStore
    middleware: Chain


def build(settings: Settings, client: redis.Redis | None = None) -> Parts:
    """The parts for ``settings`` (``client``: an existing Redis client to use).

    The chain is built before the MongoDB client: a middleware may instrument database
    clients as it is made (``diagnostics.client_spans``). Raises BrokerUnavailable,
    StoreUnavailable, ConfigError."""
    conn = client or connect(settings)
    chain = Chain.from_settings(settings)
    store: JobStore = RedisJobStore(conn, settings.key_prefix)
    if settings.mongodb_url:
        from ..store.mongo.store import MongoJobStore
        store = MongoJobStore(settings, RedisJobStore(conn, settings.key_prefix))
    return Parts(settings, conn, RedisBroker(conn, settings), store, chain)
