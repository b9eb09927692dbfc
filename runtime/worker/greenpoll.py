"""Zero-timeout readiness checks without a trip through the gevent hub.

Before every command, redis-py's connection pool checks the pooled connection for unread
data with ``select.poll()`` and a 0 timeout (``redis._parsers.hiredis._socket_can_read``).
Under gevent's patched ``select`` that check becomes a greenlet wait with a timer that
expires at once: measured here ~30 µs per command, a fifth of a drain's time when every
task makes one Redis call. A poll with a 0 timeout never blocks, so it can use the
original ``poll``; any other timeout still goes through gevent's. This touches only the
``select`` name that redis-py's hiredis parser module looks up.
"""

from __future__ import annotations

from typing import Any


class _Poller:
    """select.poll() stand-in: a 0-timeout poll uses the OS poll, others gevent's."""

    def __init__(self, original_poll: Any, green_select: Any) -> None:
        self._original_poll = original_poll
        self._green_select = green_select
        self._registered: list[tuple[Any, int]] = []

    def register(self, fd: Any, mask: int = 0) -> None:
        self._registered.append((fd, mask))

    def unregister(self, fd: Any) -> None:
        self._registered = [(f, m) for f, m in self._registered if f is not fd]

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        poller = self._original_poll() if timeout == 0 else self._green_select.poll()
        for fd, mask in self._registered:
            poller.register(fd, mask)
        return list(poller.poll(timeout))


class _SelectModule:
    def __init__(self, green_select: Any, original_poll: Any) -> None:
        self._green = green_select
        self._original_poll = original_poll

    def poll(self) -> _Poller:
        return _Poller(self._original_poll, self._green)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._green, name)


def install() -> bool:
    """Apply to redis-py's hiredis parser if gevent patched ``select``; True if applied."""
    try:
        from gevent import monkey
        from redis._parsers import hiredis
    except ImportError:
        return False
    if not monkey.is_module_patched("select") or isinstance(getattr(hiredis, "select", None), _SelectModule):
        return False
    original_poll = monkey.get_original("select", "poll")
    hiredis.select = _SelectModule(hiredis.select, original_poll)  # type: ignore[attr-defined,assignment]
    return True
