"""Which queue names are known: what ``runtime queues pause`` and the dashboard's Pause
button accept without being forced, so a typo does not pause a queue nothing uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..queuenames import did_you_mean

if TYPE_CHECKING:
    from .client import Client


def known_queues(client: Client) -> set[str]:
    """The queue names that jobs (their ready and delayed sets), live workers or the
    settings name. Raises BrokerUnavailable when Redis cannot be reached."""
    registry = client.broker.registry
    known = set(client.call(registry.queue_depths)) | set(client.settings.queues)
    return known | {q for w in client.reader.workers() for q in w.get("queues") or ()}


def unknown_queue(client: Client, name: str) -> str | None:
    """Why ``name`` is not a known queue, in one line naming the closest known one
    (``no queue 'x' is known (did you mean 'default'?): ...``); None when it is known, or
    is paused (a paused queue can always be resumed). Raises BrokerUnavailable."""
    registry = client.broker.registry
    if name in client.call(registry.paused):
        return None
    known = known_queues(client)
    if name in known:
        return None
    return f"no queue {name!r} is known{did_you_mean(name, known)}: no job, worker or setting names it"
