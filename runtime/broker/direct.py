"""Commands sent below redis-py's command layer, for the calls made once per job.

redis-py's command layer (its retry wrapper, response callbacks, observability hooks and
event dispatch) costs ~40-70 µs of client CPU a call on this kind of machine; the
worker's claims and completions, the enqueue and the waits skip it (bench/README.md has
the figures). Replies come back decoded as the pool decodes.
"""

from __future__ import annotations

import queue
import threading
import uuid
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
    of one hash slot only, see :func:`_blpop_slots`."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return direct(client.connection_pool, [("BLPOP", *keys, timeout_s)])[0]
    by_slot: dict[int, list[str]] = {}
    for key in keys:
        by_slot.setdefault(client.keyslot(key), []).append(key)
    try:
        if len(by_slot) == 1:
            return client.blpop(keys, timeout_s)
        return _blpop_slots(client, list(by_slot.values()), timeout_s)
    except redis.ResponseError as exc:
        return exc


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _blpop_slots(client: redis.cluster.RedisCluster, groups: list[list[str]], timeout_s: float) -> Any:
    """One BLPOP per hash slot at once (each a thread: a greenlet under gevent, each on a
    connection of its own), so that an item in any slot answers at once. When one answers,
    the others are ended by an item pushed on a key of their own in their slot (the first
    key's name + ``:cancel:`` + a random token, which BLPOP watches last and a minute's
    expiry clears); an item another one popped meanwhile is pushed back at the head of its
    list (LPUSH), so no item is lost and the list keeps its order. Returns the first
    answer, as :func:`blpop`; the first error reply is raised."""
    token = uuid.uuid4().hex
    cancels = [f"{group[0]}:cancel:{token}" for group in groups]
    answers: queue.Queue[int] = queue.Queue()
    replies: list[Any] = [None] * len(groups)

    def wait(i: int) -> None:
        try:
            replies[i] = client.blpop([*groups[i], cancels[i]], timeout_s)
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            replies[i] = exc
        answers.put(i)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(len(groups))]
    for t in threads:
        t.start()
    first = answers.get()
    pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
    for i, t in enumerate(threads):
        if i != first and t.is_alive():
            pipe.lpush(cancels[i], "")
            pipe.pexpire(cancels[i], 60_000)
    pipe.execute()
    for t in threads:
        t.join()
    pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
    got = []
    for i in [first, *(j for j in range(len(groups)) if j != first)]:
        reply = replies[i]
        if isinstance(reply, Exception):
            raise reply
        if reply is not None and _text(reply[0]) not in cancels:
            got.append(reply)
    for key, value in got[1:]:
        pipe.lpush(key, value)
    for c in cancels:
        pipe.delete(c)
    pipe.execute()
    return got[0] if got else None
