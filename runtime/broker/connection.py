"""Redis connections from settings: the configured URL, or the embedded server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.cluster
import redis.sentinel

from ..errors import BrokerUnavailable, ConfigError, TaskQueueError
from ..redact import mask
from ..settings import Settings
from .embedded import EmbeddedRedis

_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME := "redis+sentinel://",
            CLUSTER_SCHEME := "redis+cluster://")


#: The cluster client's errors for a cluster it cannot reach that are not RedisError: no
#: node of it answers (RedisClusterUnreachableError), a slot has no master in its map
#: (SlotNotCoveredError). Its other RedisClusterException are refusals of a command
#: (keys of several hash slots in one script...): bugs, which no retry mends.
CLUSTER_UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.RedisClusterUnreachableError,
                                                    redis.exceptions.SlotNotCoveredError)
#: What a Redis call may raise when Redis is away or refuses it: redis-py's errors, and
#: CLUSTER_UNREACHABLE.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, *CLUSTER_UNREACHABLE)
#: Every error of redis-py, the cluster client's refusals too: for where errors are
#: mapped to runtime's (:func:`runtime_error`) and the rest raised as they are.
ANY_REDIS_ERROR: tuple[type[Exception], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)
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
    whole batch). Raises BrokerUnavailable when Redis (every node of a cluster) cannot be
    reached; ConfigError for a bad URL, refused credentials, a Redis Cluster node behind a
    URL that is not ``redis+cluster://`` or a standalone Redis behind one that is."""
    url = redis_url(settings)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    kwargs.setdefault("socket_connect_timeout", 5.0)
    kwargs.update(decode_responses=True, encoding_errors="surrogateescape")
    try:
        if url.startswith(CLUSTER_SCHEME):
            client = cluster_client(url, **kwargs)  # asks a node for the cluster's slot map
            client.ping()
        else:
            client = sentinel_client(url, **kwargs) if url.startswith(SENTINEL_SCHEME) else \
                redis.Redis.from_url(url, **kwargs)
            _refuse_cluster_node(client, url)
    except ValueError as exc:  # redis-py's parse: a bad port, host, query
        raise ConfigError(f"bad Redis URL {mask(url)!r}: {mask(str(exc))}") from None
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError) as exc:
        raise ConfigError(f"Redis at {mask(url)} refused the credentials: {mask(str(exc))}") from None
    except redis.sentinel.MasterNotFoundError:
        raise BrokerUnavailable(f"cannot reach Redis at {mask(url)}: no Sentinel there names a master "
                                "for that service (unreachable, or it has none)") from None
    except redis.exceptions.RedisClusterException as exc:
        raise _cluster_refused(url, exc) from None
    except REDIS_OR_OS_ERRORS as exc:
        raise BrokerUnavailable(f"cannot reach Redis at {mask(url)}: {mask(str(exc))}") from None
    return client


def _refuse_cluster_node(client: redis.Redis, url: str) -> None:
    """Raise ConfigError when ``client`` talks to a node of a Redis Cluster (INFO's
    ``cluster_enabled``: one round trip, which also proves Redis answers, as PING would):
    a plain client gets MOVED for the keys of the other nodes. Raises redis-py's errors."""
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.exceptions.NoPermissionError:  # an ACL user without INFO: recognised at its first MOVED
        client.ping()
        return
    if enabled and str(enabled) != "0":
        raise cluster_node_error(url)


def cluster_node_error(url: str) -> ConfigError:
    """The error for a Redis Cluster node addressed by ``url`` (not ``redis+cluster://``)."""
    netloc = urlsplit(mask(url)).netloc or "host:port"
    return ConfigError(f"Redis at {mask(url)} is a node of a Redis Cluster: use redis+cluster://{netloc} "
                       "(any of its nodes; docs/cluster.md)")


def _cluster_refused(url: str, exc: redis.exceptions.RedisClusterException) -> TaskQueueError:
    """runtime's error for ``exc``, raised by redis-py's cluster client while it learnt the
    slot map of the cluster at ``url`` from its nodes (it raises RedisClusterException
    for each cause, the cause chained): ConfigError for credentials a node refused or a
    node that is not in cluster mode; else BrokerUnavailable (no node answers, slots
    that no master serves, nodes that disagree on the map while it changes)."""
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    refused = (redis.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError)
    denied = next((c for c in causes if isinstance(c, refused)), None)
    if denied is not None:
        return ConfigError(f"Redis at {mask(url)} refused the credentials: {mask(str(denied))}")
    if "Cluster mode is not enabled" in str(exc):
        netloc = urlsplit(mask(url)).netloc
        return ConfigError(f"Redis at {mask(url)} is not a Redis Cluster (cluster mode is not enabled "
                           f"there): use redis://{netloc.split(',')[0]}")
    return BrokerUnavailable(f"cannot reach Redis at {mask(url)}: {mask(str(exc))}")


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
    resharding and failovers). Connects: raises RedisClusterException when no node
    answers with a full slot map. Raises ValueError for a URL of another shape, or naming
    a database other than 0 (a cluster has no other). Typed as a plain client: it answers
    the same commands, routed by the hash slot of their keys."""
    netloc, _, path = url[len(CLUSTER_SCHEME):].partition("/")
    if path.partition("?")[0].strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, the URL names {path.partition('?')[0]!r}: "
                         "leave it out (redis+cluster://host:port[,host:port...])")
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":") if ":" in creds else ("", "", creds)
    nodes = [redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
             for host, port in _addresses(hosts, "cluster node")]
    _quiet_topology_refresh()
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
                      redis.exceptions.ClusterDownError, redis.exceptions.OutOfMemoryError, *CLUSTER_UNREACHABLE)
_TRANSIENT = re.compile(r"(?:^|\s-)(?:" + "|".join(TRANSIENT_ERRORS) + r")\b")
#: How the cluster client's plain RedisClusterException begin when the slot map it
#: fetched again (after CLUSTERDOWN, a slot not covered) is incomplete or disputed while
#: the cluster changes: gone once a failover or resharding ends.
_CLUSTER_IN_FLUX = ("All slots are not covered", "startup_nodes could not agree")


def transient(exc: BaseException) -> bool:
    """Does ``exc`` go away by itself: a lost connection, a timeout, a cluster no node of
    which answers, with a slot no master serves or a slot map in flux, or an error reply
    of TRANSIENT_ERRORS, given directly or from inside a script (``Error running script
    ...: -READONLY ...``)?"""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, _TRANSIENT_CLASSES)):
        return True  # (in a pipeline's error, redis-py drops the reply's error code: by class)
    if isinstance(exc, redis.exceptions.RedisClusterException):
        return str(exc).startswith(_CLUSTER_IN_FLUX)
    return isinstance(exc, redis.ResponseError) and _TRANSIENT.search(str(exc)) is not None


def full(exc: BaseException) -> bool:
    """Is ``exc`` Redis refusing a write for being over maxmemory (an OOM error reply)?"""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and re.search(r"(?:^|\s-)OOM\b", str(exc)) is not None)


#: Error replies of a Redis Cluster node to a command it does not serve: MOVED and ASK
#: (a key of a slot on another node), CROSSSLOT (keys of several slots).
_MISROUTED = re.compile(r"(?:^|\s-)(?:MOVED|ASK|CROSSSLOT)\b")


def misrouted(exc: BaseException, client: redis.Redis) -> bool:
    """Is ``exc`` a Redis Cluster node refusing a command of ``client``, a client that
    does not route by hash slot (a ``redis://`` URL naming a cluster node)? The cluster
    client follows MOVED and ASK itself, so from it these mean no such mistake."""
    if isinstance(client, redis.cluster.RedisCluster):
        return False
    return isinstance(exc, (redis.exceptions.AskError, redis.exceptions.ClusterCrossSlotError)) or (
        isinstance(exc, redis.ResponseError) and _MISROUTED.search(str(exc)) is not None)


def runtime_error(exc: BaseException, client: redis.Redis | None) -> TaskQueueError | None:
    """runtime's error for ``exc``, raised by a call on ``client`` (None: not known):
    ConfigError for a Redis Cluster node behind a URL that is not ``redis+cluster://``
    (:func:`misrouted`); BrokerUnavailable for a Redis, or every node of a cluster, out
    of reach, or refusing writes for now (full, read-only after a failover, loading:
    nothing was written). None for any other error (what the call sent was refused, or
    the cluster client refused a command with keys of several slots: a bug, no outage)."""
    if client is not None and misrouted(exc, client):
        return cluster_node_error(where(client))
    if full(exc):
        return BrokerUnavailable("Redis is full (its used memory is over maxmemory): nothing was written; "
                                 "free memory or raise maxmemory (runtime info)")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, *CLUSTER_UNREACHABLE)):
        return BrokerUnavailable(f"Redis unavailable: {mask(str(exc))}")
    if transient(exc):  # read-only after a failover, loading, a cluster down...
        return BrokerUnavailable(f"Redis cannot take this now: {mask(str(exc))}")
    return None


class _QuietTopologyRefresh(logging.Filter):
    """Makes the error lines of redis-py's cluster client about a failed refresh of its
    slot map ("Topology refresh failed, keeping the current one: ...", one per attempt)
    debug lines, shown only where its logger logs at DEBUG: runtime says itself that the
    cluster is out of reach (BrokerUnavailable; a worker's "lost Redis" line, once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not record.getMessage().startswith("Topology refresh failed"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _quiet_topology_refresh() -> None:
    """Install :class:`_QuietTopologyRefresh` on redis-py's cluster logger (once)."""
    logger = logging.getLogger("redis.cluster")
    if not any(isinstance(f, _QuietTopologyRefresh) for f in logger.filters):
        logger.addFilter(_QuietTopologyRefresh())


def masters_info(cluster: Any) -> dict[str, Any]:
    """INFO (default sections) of a Redis Cluster as one server's: role ``"cluster of N
    masters"``, ``used_memory`` and ``maxmemory`` summed over its masters (maxmemory 0 when
    one has no limit), the other fields those of one master. One round trip per master."""
    masters = list(cluster.info(target_nodes=cluster.PRIMARIES).values())
    limits = [int(m.get("maxmemory") or 0) for m in masters]
    return {**masters[0], "role": f"cluster of {len(masters)} masters", "maxmemory": sum(limits) * all(limits),
            "used_memory": sum(int(m.get("used_memory") or 0) for m in masters)}
