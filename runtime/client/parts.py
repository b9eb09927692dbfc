"""What a client and a worker are built from: one connection, broker, store and chain.

:func:`build` makes them from settings; a worker builds its parts once and hands them to
the client its tasks queue jobs with, so a process holds one of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

import redis

from ..broker import RedisBroker, connect
from ..errors import ConfigError
from ..job import Job
from ..middleware import Chain
from ..settings import Settings
from ..store import JobStore, RedisJobStore

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Parts:
    """The settings, the Redis client (str responses), the broker, the job store (Redis, or
    MongoDB when ``mongodb_url`` is set) and the middleware chain."""

    settings: Settings
    redis: redis.Redis
    broker: RedisBroker
    store: JobStore
    middleware: Chain


def build(settings: Settings, client: redis.Redis | None = None, middleware: bool = True) -> Parts:
    """The parts for ``settings`` (``client``: an existing Redis client to use; without
    ``middleware``, an empty chain: for reads that show no report, which then import none).

    The chain is built before the MongoDB client: a middleware may instrument database
    clients as it is made (the client spans). Raises BrokerUnavailable,
    StoreUnavailable, ConfigError."""
    conn = client or connect(settings)
    chain = Chain.from_settings(settings) if middleware else Chain()
    store: JobStore = RedisJobStore(conn, settings.key_prefix)
    if settings.mongodb_url:
        try:
            import pymongo  # noqa: F401 - the MongoDB store's driver: an extra
        except ModuleNotFoundError:
            raise ConfigError("a MongoDB URL needs pymongo, which is not installed: pip install pymongo") from None
        from ..store.mongo.store import MongoJobStore
        store = MongoJobStore(settings, RedisJobStore(conn, settings.key_prefix))
    return Parts(settings, conn, RedisBroker(conn, settings), store, chain)


class Calls(Protocol):
    """What the waiting and the reads need of a client (runtime.client.Client is one)."""

    redis: redis.Redis
    broker: RedisBroker
    store: JobStore

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` with Redis and MongoDB errors as runtime's."""

    def get_job(self, job_id: str) -> Job:
        """The job's document. Raises JobNotFound."""

    def live_or_stored(self, ids: Sequence[str]) -> list[Job | None]:
        """Documents of ``ids`` from Redis, else from MongoDB."""
