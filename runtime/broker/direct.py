"""Commands sent below redis-py's command layer, for the calls made once per job.

redis-py's command layer (its retry wrapper, response callbacks, observability hooks and
event dispatch) costs ~40-70 µs of client CPU a call on this kind of machine; the
worker's claims and completions, the enqueue and the waits skip it (bench/README.md has
the figures). Replies come back decoded as the pool decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster

_pack_command: Any
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack_command = None


def pack(conn: Any, calls: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """``calls`` in the Redis protocol. hiredis packs str, int, float and bytes itself, as
    redis-py's encoder does (UTF-8; repr of numbers), without its Python loop over every
    argument (~1 µs an argument); anything else goes through redis-py (which raises
    DataError for what it cannot send)."""
    if _pack_command is not None:
        try:
            return [b"".join([_pack_command(call) for call in calls])]
        except TypeError:
            pass
    return conn.pack_commands(calls)  # type: ignore[no-any-return]


def direct(pool: redis.ConnectionPool, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``calls`` (each a command's arguments) in one round trip on a connection of
    ``pool`` and return the raw replies; an error reply comes back as its ResponseError
    instance, like a pipeline's with ``raise_on_error=False``.

    Raises ConnectionError / TimeoutError (the connection is dropped, as redis-py does).
    Any other exception while a reply is pending (a greenlet kill, a timeout) drops the
    connection too: it is never reused mid-reply."""
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        conn = pool.get_connection("EVALSHA")
    try:
        conn.send_packed_command(pack(conn, calls))  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:  # read whole: the connection is clean
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)


def blpop(client: redis.Redis, keys: Sequence[str], timeout_s: float) -> Any:
    """``BLPOP keys timeout_s`` on ``client`` (timeout_s > 0.01: Redis reads less than
    1 ms as "block forever"): (key, value), or None after the timeout; an error reply
    comes back as its exception. On a Redis Cluster, where one blocking call takes keys
    of one hash slot only, the keys are asked slot by slot, each for its share of the
    timeout (at least 10 ms) until one answers."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return direct(client.connection_pool, [("BLPOP", *keys, timeout_s)])[0]
    by_slot: dict[int, list[str]] = {}
    for key in keys:
        by_slot.setdefault(client.keyslot(key), []).append(key)
    share = max(timeout_s / len(by_slot), 0.01)
    try:
        for group in by_slot.values():
            reply = client.blpop(group, share)
            if reply is not None:
                return reply
    except redis.ResponseError as exc:
        return exc
    return None
