"""What ``runtime schedules`` shows and does: each schedule's next and last fire, last
job and status, whether its schedulers are alive and whether it fires on time; pause,
resume and run-now."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import ConfigError
from ..schedule import make_schedule
from .loop import STALE_S
from .state import ScheduleState

#: A schedule whose expected fire time passed this many seconds ago (beyond its grace)
#: without a fire is shown as late ("not firing").
LATE_S = 5.0


def schedulers_alive(state: ScheduleState, now: float) -> list[str]:
    """Ids of the workers whose scheduler synced within STALE_S seconds of ``now``."""
    return sorted(w for w, t in state.schedulers().items() if now - t <= STALE_S)


def describe(state: ScheduleState, now: float | None = None) -> dict[str, Any]:
    """{"schedulers": live scheduler ids, "schedules": [one dict per schedule]} with, per
    schedule: name, task, when (cron and tz, or every), next_fire and last_fire (UNIX s),
    last_job, last_job_status, last_status, paused, counts of missed/overlap/paused fire
    times, late_s (seconds past a fire time not handled, beyond the grace, else 0) and
    status: "removed" (a worker started without it in its code), "paused", "ok", "late"
    (a scheduler runs, the schedule does not fire: a scheduler wedged, or no live worker
    has it in its code) or "no scheduler"."""
    now = time.time() if now is None else now
    alive = schedulers_alive(state, now)
    rows = []
    states = state.read()
    jobs = [h.get("last_job") for h in states.values()]
    pipe = state.redis.pipeline(transaction=False)
    for j in jobs:
        pipe.hget(state.keys.job(j or "-"), "status")
    statuses = pipe.execute() if jobs else []
    for (name, h), job_status in zip(states.items(), statuses):
        rows.append(_row(name, h, job_status, now, bool(alive)))
    return {"schedulers": alive, "schedules": rows}


def _row(name: str, h: dict[str, str], job_status: str | None, now: float, alive: bool) -> dict[str, Any]:
    d = json.loads(h.get("def") or "{}")
    last_ms = int(h.get("last_fire") or 0)
    row: dict[str, Any] = {
        "name": name, "task": d.get("path"), "queue": d.get("queue"),
        "when": f"cron {d['cron']} {d.get('tz', 'UTC')}" if d.get("cron") else f"every {d.get('every_s')} s",
        "last_fire": last_ms / 1000 if last_ms and h.get("last_status") else None,  # else: never fired
        "last_status": h.get("last_status"),
        "last_job": h.get("last_job"), "last_job_status": job_status, "paused": h.get("paused") == "1",
        "missed": int(h.get("count_missed") or 0), "overlap": int(h.get("count_overlap") or 0),
        "next_fire": None, "late_s": 0.0,
    }
    try:
        s = make_schedule(name, d.get("path") or "?", cron=d.get("cron"), every=d.get("every_s"),
                          tz=d.get("tz", "UTC"), grace_s=d.get("grace_s", 60.0))
    except ConfigError:
        row["status"] = "no definition"
        return row
    expected = s.next_after(last_ms) / 1000 if last_ms else None
    row["next_fire"] = s.next_after(int(now * 1000)) / 1000
    if expected is not None and now > expected + s.grace_s + LATE_S:
        row["late_s"] = round(now - expected - s.grace_s, 3)
    row["status"] = ("removed" if h.get("removed_at") else "paused" if row["paused"] else
                     "no scheduler" if not alive else "late" if row["late_s"] else "ok")
    return row


def run_now(client: Any, name: str) -> str:
    """Queue schedule ``name``'s job now (id ``NAME@now-<ms>``), whatever its fire times,
    pause and overlap; returns the job id. Raises InvalidParams for an unknown name."""
    state = ScheduleState(client.broker)
    d = state.definition(name)
    job_id = f"{name}@now-{int(time.time() * 1000)}"
    got = str(client.queue_job(d["path"], d.get("params") or {}, queue=d.get("queue", "default"),
                               priority=int(d.get("priority", 0)), job_id=job_id, check=False))
    state.ran_now(name, got)
    return got
