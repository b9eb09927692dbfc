"""Moving waiting jobs to another queue: one code path for a standalone Redis, Sentinel
and a Redis Cluster, with no job lost and none run twice.

A job's id names its queue, whose hash slot holds the job's keys, so a job that moves to
another queue gets a new id there (``QUEUE:REST@m`` and 12 hex digits: the same for the
same move, see move.lua). No one script can touch both slots, so a move is three steps,
each atomic in one slot and each safe to run again:

1. ``move.lua``, in the old queue: a job still waiting (not claimed) leaves its queue,
   ends ``moved`` with ``moved_to`` its new id, and enters the queue's moving set
   (``{p}:moving:{queue}``). A job claimed meanwhile is refused with its status.
2. ``land.lua``, in the new queue: its copy is written and queued, unless the new queue's
   landed set (``{p}:landed:{queue}``) names it: a copy is made once, even when it has run
   and its document has gone since.
3. ``settle.lua``, in the old queue: it leaves the moving set; its document then expires
   as a final one, and clients waiting on the old id are told (they follow it to the new
   id: runtime.client.waiting).

A mover that dies between steps leaves the job in the moving set: :func:`finish_moves`
(each pass of a worker's reaper) does steps 2 and 3 for entries older than
:data:`GRACE_S`. A landed entry goes after :data:`LANDED_KEEP_S`, and only once its job
has left its old queue's moving set; land.lua refuses a call made more than an hour after
its caller read the job (its clock against the Redis server's), so no copy is made once
its landed entry may be gone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..hashfields import COUNT, decode_entry, entry_count, entry_field
from ..job import queue_of
from ..status import Status
from .broker import RedisBroker

log = logging.getLogger("runtime.broker")

#: Seconds a job may stay in its old queue's moving set before :func:`finish_moves` ends
#: its move (a live mover ends it within milliseconds; finishing it twice is harmless).
GRACE_S = 10.0
#: Seconds a landed entry is kept at least (land.lua refuses calls an hour old).
LANDED_KEEP_S = 86_400.0
#: Most entries of one queue's moving or landed set handled per :func:`finish_moves` pass.
BATCH = 500
#: Fields of a moved job's document its copy does not take as they are.
_NOT_COPIED = frozenset({"id", "queue", "priority", "status", "moved_to", "moved_from", "ended_at", "waiters",
                         "abort_by", "cap"})


def move(broker: RedisBroker, ids: Sequence[str], queue: str | None, priority: int | None,
         by: str = "") -> list[tuple[str, str]]:
    """Move waiting ``ids`` to ``queue`` and/or ``priority`` (None: each keeps its own),
    keeping their due time and status; within its own queue a job keeps its id, in
    another it gets a new one (move.lua says how). One (reply, id) per id: ('ok', the
    job's id now); ('already-moved', its new id) for a job moved to ``queue`` before
    (this move made again: nothing changes, its copy is landed if it was not); or
    ('missing' or the status of a job that does not wait in a queue, its id: 'moved' for
    one moved to another queue). Step 1 for every queue of ``ids`` in one round trip,
    then steps 2 and 3 (the module docstring). Raises redis.RedisError; a move cut short by it is ended by
    :func:`finish_moves`, or by the same call made again."""
    groups: dict[str, list[int]] = {}
    for n, i in enumerate(ids):
        q = queue_of(i)
        if q is not None:
            groups.setdefault(q, []).append(n)
    head = ("" if queue is None else queue, "" if priority is None else str(priority), by)
    calls = [broker.call("move", [broker.keys.job(ids[n]) for n in g], (*head, *(ids[n] for n in g)))
             for g in groups.values()]
    out = [("missing", i) for i in ids]
    docs: dict[str, dict[str, str]] = {}
    for g, reply in zip(groups.values(), broker.calls(calls) if calls else []):
        for n, r in zip(g, reply):
            if isinstance(r, list):  # to another queue: [verdict, new id, '1' and its document to copy, or '']
                out[n] = (str(r[0]), str(r[1]))
                if r[2]:
                    docs[ids[n]] = dict(zip(r[3::2], r[4::2]))
            else:
                out[n] = (str(r), ids[n])
    if docs:
        land_and_settle(broker, docs, time.time())
    return out


def landing(old_id: str, doc: Mapping[str, str], by_default: str = "") -> tuple[str, list[Any]] | None:
    """(its new id, its land.lua arguments) for the copy of job ``old_id`` marked moved
    by move.lua (its document ``doc``, the moved entry last in its history): the
    document without that entry (its history fields: runtime.hashfields), under the new
    id, queue and priority, in the status it waited in, naming ``moved_from``. None for
    a document that is not of such a job."""
    n = entry_count(doc) or 0  # the field of the entry move.lua added last
    try:
        last = decode_entry(json.loads(doc.get(entry_field(n)) or "null"))
    except ValueError:
        return None
    new = doc.get("moved_to")
    if doc.get("status") != Status.MOVED or last.get("status") != Status.MOVED \
            or not new or last.get("to") != new or last.get("was") not in {s.value for s in Status}:
        return None
    target = queue_of(new) or ""
    fields = {k: v for k, v in doc.items() if k not in _NOT_COPIED and k != entry_field(n)}
    fields.update(id=new, queue=target, priority=str(last.get("priority", 0)), status=str(last["was"]),
                  moved_from=old_id, **{COUNT: str(n - 1)})
    note = (f"moved from {doc.get('queue') or queue_of(old_id)} (priority {doc.get('priority') or 0}) to {target} "
            f"(priority {fields['priority']})")
    return new, [new, old_id, note, str(last.get("by", by_default)), len(fields),
                 *(x for kv in fields.items() for x in kv)]


def land_and_settle(broker: RedisBroker, docs: Mapping[str, Mapping[str, str]], found_at: float) -> list[str]:
    """Steps 2 and 3 for the jobs ``docs`` (old id -> its document, marked moved), found
    to land at ``found_at`` (UNIX s): one round trip for the copies (a land.lua call per
    target queue, after naming the queues in {p}:queues), one for the confirmations (a
    settle.lua call per old queue). Returns the old ids settled; a document that is not
    of a moved job leaves the moving set, logged."""
    by_target: dict[str, list[tuple[str, str, list[Any]]]] = {}
    settle: list[str] = []
    for old, doc in docs.items():
        made = landing(old, doc)
        if made is None:
            log.error("job %s is in the moving set of its queue but its document is not one of a moved job "
                      "(status %s): left where it is, out of the moving set", old, doc.get("status"))
            settle.append(old)
            continue
        by_target.setdefault(queue_of(made[0]) or "", []).append((old, *made))
    calls: list[tuple[Any, ...]] = []
    for q, group in by_target.items():
        keys = [*broker.keys.queue_keys(q)[:3], broker.keys.landed(q), *(broker.keys.job(new) for _, new, _ in group)]
        calls.append(broker.call("land", keys, (repr(found_at), *(a for _, _, args in group for a in args))))
    if calls:
        replies = broker.calls([("SADD", broker.keys.queues, *by_target), *calls])[1:]
        for group, reply in zip(by_target.values(), replies):
            settle += [old for (old, _, _), r in zip(group, reply) if r in ("ok", "exists")]
    by_source: dict[str, list[str]] = {}
    for old in settle:
        by_source.setdefault(queue_of(old) or "", []).append(old)
    ttl = broker.settings.ttl_s[Status.MOVED]
    if by_source:
        broker.calls([broker.call("settle", [broker.keys.moving(q), *(k for i in group for k in (
            broker.keys.job(i), broker.keys.notify(i)))], (ttl, *group)) for q, group in by_source.items()])
    return settle


def finish_moves(broker: RedisBroker, grace_s: float = GRACE_S) -> int:
    """End the moves cut short (a mover that died between steps): steps 2 and 3 for the
    jobs in a moving set for over ``grace_s`` seconds; and drop the landed entries older
    than LANDED_KEEP_S whose job left its moving set. Returns the moves ended. Raises
    redis.RedisError."""
    queues = broker.queue_names()
    if not queues:
        return 0
    now = time.time()
    reads: list[tuple[Any, ...]] = []
    for q in queues:
        reads += (("ZRANGEBYSCORE", broker.keys.moving(q), "-inf", repr(now - grace_s), "LIMIT", 0, BATCH),
                  ("ZRANGEBYSCORE", broker.keys.landed(q), "-inf", repr(now - LANDED_KEEP_S), "LIMIT", 0, BATCH))
    replies = broker.calls(reads)
    pending = [old for r in replies[0::2] for old in r]
    landed = [(q, member) for q, r in zip(queues, replies[1::2]) for member in r]  # "NEW_ID OLD_ID"
    ended: list[str] = []
    if pending:
        found = broker.calls([("HGETALL", broker.keys.job(old)) for old in pending])
        gone = [old for old, doc in zip(pending, found) if not doc]
        if gone:  # never expires while moving: deleted or evicted
            log.error("jobs in a moving set whose document is gone (deleted or evicted): %s", gone)
            broker.calls([("ZREM", broker.keys.moving(queue_of(old) or ""), old) for old in gone])
        docs = {old: _as_dict(doc) for old, doc in zip(pending, found) if doc}
        ended = land_and_settle(broker, docs, now) if docs else []
        if ended:
            log.warning("ended %d moves to another queue cut short (the mover stopped between steps): %s",
                        len(ended), ended)
    if landed:
        olds = [member.rpartition(" ")[2] for _, member in landed]
        still = broker.calls([("ZSCORE", broker.keys.moving(queue_of(old) or ""), old) for old in olds])
        done = [(q, member) for (q, member), score in zip(landed, still) if score is None]
        if done:
            broker.calls([("ZREM", broker.keys.landed(q), member) for q, member in done])
    return len(ended)


def _as_dict(reply: Any) -> dict[str, str]:
    """An HGETALL reply as a dict (a flat list below redis-py's command layer)."""
    return dict(reply) if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
