"""Bulk actions by filter as tracked operations: each is a Redis hash (``{p}:op:{id}``:
action, filter, who, counts, state) listed newest first in ``{p}:ops``, run in a thread of
the dashboard process, never inside a web request, so a page can show its progress.

An operation takes the ids of the jobs that match its filter when it starts, then acts on
them in batches (runtime.client.Client.control_many); a job whose status no longer allows
the action (it started, ended...) is counted as skipped. Each touched job's history entry
records who asked and from where.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ..client import Client
from ..client.search import JobFilter
from ..job import new_job_id
from ..status import REQUEUABLE, WAITING, Status, allowed_from

log = logging.getLogger("runtime.dashboard")

ACTIONS = ("requeue", "cancel", "abort", "move")
#: The statuses of the jobs each action can change (runtime.status's table): cancel and
#: move a waiting job, abort a running one, requeue an ended (or interrupted) one.
APPLIES: dict[str, frozenset[Status]] = {"requeue": REQUEUABLE, "cancel": allowed_from(Status.CANCEL),
                                         "abort": allowed_from(Status.ABORT), "move": WAITING}
#: Ids per round trip; the hash is updated after each batch.
BATCH = 200
KEEP_S = 7 * 86400
RECENT = 100
#: An unfinished operation not heard of for this long, seconds (a batch, or the whole
#: collection of its ids, takes less), is shown stalled (the
#: dashboard process that ran it stopped: operations do not resume).
STALLED_S = 300.0


class Operations:
    """Tracked bulk actions on the deployment of ``client``."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.keys = client.broker.keys

    def start(self, action: str, f: JobFilter, by: str, target: dict[str, Any] | None = None) -> str:
        """Record an operation doing ``action`` on the jobs of ``f`` (``target`` of a move:
        ``{"queue": name or None, "priority": n or None}``), start its thread and return its
        id. Raises ValueError for an unknown action or an empty filter (a bulk action on
        every job is refused: give at least one filter)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        if not f.to_dict():
            raise ValueError("a bulk action needs at least one filter")
        op_id = new_job_id()
        key = self.keys.operation(op_id)
        pipe = self.client.redis.pipeline()
        target = target or {}
        pipe.hset(key, mapping={"id": op_id, "action": action, "filter": json.dumps(f.to_dict()), "by": by,
                                "target": json.dumps(target),
                                "state": "collecting", "total": 0, "done": 0, "ok": 0, "skipped": 0,
                                "started_at": time.time(), "beat_at": time.time()})
        pipe.expire(key, KEEP_S)
        pipe.lpush(self.keys.operations, op_id)
        pipe.ltrim(self.keys.operations, 0, RECENT - 1)
        pipe.execute()
        threading.Thread(target=self.run, args=(op_id, action, f, by, target), name=f"op-{op_id}",
                         daemon=True).start()
        return op_id

    def run(self, op_id: str, action: str, f: JobFilter, by: str, target: dict[str, Any] | None = None) -> None:
        """Collect the ids of ``f``, then act on them batch by batch, counting as it goes;
        state ``done``, or ``failed`` with the error."""
        key = self.keys.operation(op_id)
        r = self.client.redis
        try:
            ids = self.client.reader.matching_ids(f)
            r.hset(key, mapping={"state": "running", "total": len(ids), "beat_at": time.time()})
            for i in range(0, len(ids), BATCH):
                batch = ids[i:i + BATCH]
                if action == "move":
                    to = target or {}
                    replies = self.client.move_many(batch, to.get("queue"), to.get("priority"), by)
                else:
                    replies = self.client.control_many(action, batch, by)
                ok = sum(1 for x in replies if x == "ok")
                pipe = r.pipeline()
                pipe.hincrby(key, "done", len(batch))
                pipe.hincrby(key, "ok", ok)
                pipe.hincrby(key, "skipped", len(batch) - ok)
                pipe.hset(key, "beat_at", time.time())
                pipe.execute()
            r.hset(key, mapping={"state": "done", "ended_at": time.time()})
        except Exception as exc:  # noqa: BLE001 - recorded on the operation, for its page
            log.exception("bulk %s %s failed", action, op_id)
            r.hset(key, mapping={"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                                 "ended_at": time.time()})

    def get(self, op_id: str) -> dict[str, Any] | None:
        """The operation ``op_id``: ``{"id", "action", "filter": {...}, "by", "state"
        (collecting, running, done, failed; or stalled: unfinished and not heard of for
        STALLED_S), "total", "done", "ok", "skipped", "started_at", "ended_at" (UNIX s),
        "error"}``; None when unknown or expired."""
        if not op_id.isalnum():
            return None
        raw: dict[str, str] = self.client.redis.hgetall(self.keys.operation(op_id))  # type: ignore[assignment]
        if not raw:
            return None
        out: dict[str, Any] = dict(raw)
        out["filter"] = json.loads(raw.get("filter") or "{}")
        out["target"] = json.loads(raw.get("target") or "{}")
        for k in ("total", "done", "ok", "skipped"):
            out[k] = int(raw.get(k) or 0)
        for k in ("started_at", "ended_at", "beat_at"):
            out[k] = float(raw[k]) if raw.get(k) else None
        if out["state"] in ("collecting", "running") and time.time() - (out["beat_at"] or 0.0) > STALLED_S:
            out["state"] = "stalled"
        return out

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` operations still kept, newest first."""
        ids: list[str] = self.client.redis.lrange(self.keys.operations, 0, limit - 1)  # type: ignore[assignment]
        found = (self.get(i) for i in ids)
        return [op for op in found if op is not None]
