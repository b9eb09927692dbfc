"""Redis connections from settings: the configured URL, or the embedded server."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import unquote

import redis
import redis.cluster
import redis.sentinel

from ..errors import BrokerUnavailable, ConfigError
from ..redact import mask
from ..settings import Settings
from .embedded import EmbeddedRedis

_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME := "redis+sentinel://",
            CLUSTER_SCHEME := "redis+cluster://")


#: What a Redis call may raise: redis-py's errors, and those of its cluster client that
#: are not RedisError (RedisClusterUnreachableError when no node of the cluster answers,
#: SlotNotCoveredError while a slot has no master in its map).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)
#: REDIS_ERRORS and OSError (a socket error redis-py did not wrap)
REDIS_OR_OS_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)


def redis_url(settings: Settings) -> str:
    """The URL to use: ``settings.redis_url``, else the embedded server's (started if need be)."""
    if settings.redis_url:
        if not settings.redis_url.startswith(_SCHEMES):
            raise ConfigError("redis URL must start with redis://, rediss://, unix://, redis+sentinel:// or "
                              f"redis+cluster://, got {mask(settings.redis_url)!r}")
        return settings.redis_url
    return EmbeddedRedis(settings.embedded_path).ensure()


#: Socket read timeout of every connection, seconds. redis-py 8 defaults to 5 s, which
#: a blocking command of 5 s races against; runtime's blocking calls last at most
#: MAX_BLOCK_S, far below this, which only catches a dead or partitioned server.
SOCKET_TIMEOUT_S = 15.0
#: Longest single blocking call (BLPOP) runtime makes, seconds; longer waits loop.
MAX_BLOCK_S = 2.0


def connect(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A redis-py client (str responses) for ``settings``. Bytes that are not UTF-8 are
    read as surrogate escapes (a corrupt document is reported, not a failed read of a
    whole batch). Raises BrokerUnavailable."""
    url = redis_url(settings)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    kwargs.setdefault("socket_connect_timeout", 5.0)
    kwargs.update(decode_responses=True, encoding_errors="surrogateescape")
    try:
        if url.startswith(SENTINEL_SCHEME):
            client = sentinel_client(url, **kwargs)
        elif url.startswith(CLUSTER_SCHEME):
            client = cluster_client(url, **kwargs)
        else:
            client = redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:  # redis-py's parse: a bad port, host, query
        raise ConfigError(f"bad Redis URL {mask(url)!r}: {mask(str(exc))}") from None
    try:
        client.ping()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError) as exc:
        raise ConfigError(f"Redis at {mask(url)} refused the credentials: {mask(str(exc))}") from None
    except redis.sentinel.MasterNotFoundError:
        raise BrokerUnavailable(f"cannot reach Redis at {mask(url)}: no Sentinel there names a master "
                                "for that service (unreachable, or it has none)") from None
    except REDIS_OR_OS_ERRORS as exc:
        raise BrokerUnavailable(f"cannot reach Redis at {mask(url)}: {mask(str(exc))}") from None
    return client


def sentinel_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of the master that the Sentinels of ``url`` name:
    ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`` (the
    password is the master's and its replicas'; the Sentinels are asked without one).
    redis-py's Sentinel client finds the master again on a failover: a connection that
    finds a replica (READONLY) is dropped and the next one asks the Sentinels.
    Raises ValueError for a URL of another shape."""
    from redis.sentinel import Sentinel
    rest = url[len(SENTINEL_SCHEME):]
    netloc, _, path = rest.partition("/")
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":") if ":" in creds else ("", "", creds)
    parts = [p for p in path.split("/") if p]
    if not hosts or not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("expected redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db] "
                         "(percent-encode a '/' in the password as %2F)")
    addresses = _addresses(hosts, "Sentinel")
    timeouts: dict[str, Any] = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs}
    sentinel = Sentinel(addresses, sentinel_kwargs=timeouts, **timeouts)
    more: dict[str, Any] = {"username": unquote(user) or None, "password": unquote(password) or None,
                            "db": int(parts[1]) if len(parts) == 2 else 0, **kwargs}
    client: redis.Redis = sentinel.master_for(parts[0], **more)
    return client


def _addresses(hosts: str, what: str) -> list[tuple[str, int]]:
    """(host, port) of each of the comma-separated ``hosts``. Raises ValueError naming
    ``what`` they are."""
    out = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad {what} address {hp!r}: host:port expected (port 1 to 65535)")
        out.append((host.strip("[]"), int(port)))
    return out


def cluster_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of the Redis Cluster that ``url`` names:
    ``redis+cluster://[[user]:password@]host:port[,host:port...]``, any of its nodes
    (redis-py's cluster client learns the others, and follows MOVED and ASK replies,
    resharding and failovers). Raises ValueError for a URL of another shape. Typed as a
    plain client: it answers the same commands, routed by the hash slot of their keys."""
    netloc = url[len(CLUSTER_SCHEME):].split("/", 1)[0]  # a cluster has no databases
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":") if ":" in creds else ("", "", creds)
    nodes = [redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
             for host, port in _addresses(hosts, "cluster node")]
    client = redis.cluster.RedisCluster(startup_nodes=nodes, username=unquote(user) or None,
                                        password=unquote(password) or None, **kwargs)
    return cast("redis.Redis", client)


def sentinels_of(client: redis.Redis) -> list[tuple[str, int]] | None:
    """The (host, port) of each Sentinel a Sentinel client asks; None for another client."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if manager is None:
        return None
    return [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in manager.sentinels]


def own_client(client: redis.Redis) -> redis.Redis:
    """A client like ``client`` on connections of its own (a blocked call, a thread of its
    own); for a Sentinel client, with Sentinel connections of its own too, so that it may
    find the master from another thread."""
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = [redis.cluster.ClusterNode(n.host, n.port)  # fresh: a node
                 for n in client.nodes_manager.startup_nodes.values()]  # holds its connections
        kwargs = {k: v for k, v in client.nodes_manager.connection_kwargs.items() if k not in ("host", "port")}
        return cast("redis.Redis", redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs))
    pool = client.connection_pool
    addresses = sentinels_of(client)
    if addresses is None:
        return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                                **pool.connection_kwargs))
    from redis.sentinel import Sentinel
    first = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs  # type: ignore[attr-defined]
    timeouts: dict[str, Any] = {k: first[k] for k in ("socket_timeout", "socket_connect_timeout") if k in first}
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    name = getattr(pool, "service_name", "")
    own: redis.Redis = Sentinel(addresses, sentinel_kwargs=timeouts, **timeouts).master_for(name, **kwargs)
    return own


def disconnect(client: redis.Redis) -> None:
    """Drop every connection of ``client`` (the next command connects again): its pool's,
    or on a Redis Cluster each node's."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
    else:
        client.close()


def moved_master(client: redis.Redis) -> tuple[str, str] | None:
    """For a Sentinel client: ask the Sentinels which server is the master now; when it
    moved, the client's idle connections are dropped (the next command goes to the new
    one) and (old, new) is returned as "host:port" strings; else (or for another client,
    or when no Sentinel answers) None. Redis's own READONLY reply comes only once the
    old master is demoted, which Sentinel does seconds after it promoted the new one:
    writes meanwhile go to the old master and are lost when it resyncs."""
    pool = getattr(client, "connection_pool", None)
    if getattr(pool, "sentinel_manager", None) is None:
        return None
    before = getattr(pool, "master_address", None)
    try:
        now = pool.get_master_address()  # type: ignore[union-attr]  # drops idle connections on a move
    except REDIS_OR_OS_ERRORS:
        return None
    if before is None or tuple(now) == tuple(before):
        return None
    return f"{before[0]}:{before[1]}", f"{now[0]}:{now[1]}"


def where(client: redis.Redis) -> str:
    """The server ``client`` talks to, as a URL with its password masked (``***``): for
    start lines, ``runtime info`` and errors."""
    if isinstance(client, redis.cluster.RedisCluster):
        kw = client.nodes_manager.connection_kwargs
        secret = f"{kw.get('username') or ''}:***@" if kw.get("password") else ""
        return f"{CLUSTER_SCHEME}{secret}{','.join(sorted(client.nodes_manager.startup_nodes))}"
    pool = client.connection_pool
    kw = pool.connection_kwargs
    secret = f"{kw.get('username') or ''}:***@" if kw.get("password") else ""
    addresses = sentinels_of(client)
    if addresses is not None:
        hosts = ",".join(f"{host}:{port}" for host, port in addresses)
        return f"{SENTINEL_SCHEME}{secret}{hosts}/{getattr(pool, 'service_name', '')}/{kw.get('db') or 0}"
    if kw.get("path"):
        return f"unix://{secret}{kw['path']}" + (f"?db={kw['db']}" if kw.get("db") else "")
    scheme = "rediss" if "SSL" in client.connection_pool.connection_class.__name__ else "redis"
    return f"{scheme}://{secret}{kw.get('host')}:{kw.get('port')}/{kw.get('db') or 0}"


def queued(pipe: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The commands a redis-py pipeline holds, as (args, options), to queue them again
    after a failed execute (which empties it). A cluster pipeline keeps them in its
    execution strategy (redis-py 5.1 and later), not in ``command_stack``."""
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is not None:
        return [(c.args, c.options) for c in strategy.command_queue]
    return [(args, options) for args, options in pipe.command_stack]


def text(value: bytes | str) -> str:
    """A reply of a client that decodes responses (runtime's do), typed as str: redis-py
    types every reply ``bytes | str``."""
    return value if isinstance(value, str) else value.decode()


def texts(values: Iterable[bytes | str]) -> list[str]:
    """:func:`text` of each of ``values``."""
    return [v if isinstance(v, str) else v.decode() for v in values]


#: Error replies of a Redis that cannot take writes for now (read-only replica after a
#: failover, loading its data, a busy script, a blocked call unblocked, a failed save,
#: full: over maxmemory until documents expire or the limit is raised): the worker waits
#: and tries again, as for a lost connection, and drops no data.
TRANSIENT_ERRORS = ("READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN",
                    "NOREPLICAS", "UNBLOCKED", "MISCONF", "OOM")


_TRANSIENT_CLASSES = (redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError,
                      redis.exceptions.MasterDownError, redis.exceptions.TryAgainError,
                      redis.exceptions.ClusterDownError, redis.exceptions.OutOfMemoryError,
                      redis.exceptions.RedisClusterUnreachableError, redis.exceptions.SlotNotCoveredError)
_TRANSIENT = re.compile(r"(?:^|\s-)(?:" + "|".join(TRANSIENT_ERRORS) + r")\b")


def transient(exc: BaseException) -> bool:
    """Does ``exc`` go away by itself: a lost connection, a timeout, a cluster no node of
    which answers or with a slot no master serves, or an error reply of TRANSIENT_ERRORS,
    given directly or from inside a script (``Error running script ...: -READONLY ...``)?"""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, _TRANSIENT_CLASSES)):
        return True  # (in a pipeline's error, redis-py drops the reply's error code: by class)
    return isinstance(exc, redis.ResponseError) and _TRANSIENT.search(str(exc)) is not None


def full(exc: BaseException) -> bool:
    """Is ``exc`` Redis refusing a write for being over maxmemory (an OOM error reply)?"""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and re.search(r"(?:^|\s-)OOM\b", str(exc)) is not None)
