"""Commands sent below redis-py's command layer, for the calls made once per job.

redis-py's command layer (its retry wrapper, response callbacks, observability hooks and
event dispatch) costs ~40-70 µs of client CPU a call on this kind of machine; the
worker's claims and completions, the enqueue and the waits skip it (bench/README.md has
the figures). Replies come back decoded as the pool decodes.
"""

from __future__ import annotations

from typing import Any, Sequence

import redis


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
        conn = pool.get_connection("EVALSHA")  # type: ignore[call-arg]
    try:
        if len(calls) == 1:
            conn.send_command(*calls[0])
        else:
            conn.send_packed_command(conn.pack_commands(calls))
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:  # read whole: the connection is clean
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
