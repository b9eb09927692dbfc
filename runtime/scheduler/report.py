"""What ``runtime schedules`` shows and does: each schedule's next and last fire, last
job and status, whether its schedulers are alive (their syncs and the worker registry)
and whether it fires on time; pause, resume, run-now and forget."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigError, ScheduleRefused
from ..schedule import make_schedule
from .loop import STALE_S
from .state import ScheduleState

#: A schedule whose expected fire time passed this many seconds ago (beyond its grace)
#: without a fire is shown as late ("not firing").
LATE_S = 5.0


def schedulers_seen(state: ScheduleState, now: float) -> list[dict[str, Any]]:
    """Every worker that ran the scheduler (the last day), by id: ``worker``, ``synced_at``
    (its last sync, server s), ``registered`` (its worker registry entry exists: the
    process heartbeats), ``schedules`` (the names it runs; None: not recorded) and
    ``state``: "alive" (registered, synced within STALE_S seconds), "stale" (registered,
    not synced: its scheduler is wedged) or "dead" (no longer in the worker registry: its
    process stopped without leaving, or was killed)."""
    synced = state.schedulers()
    ids = sorted(synced)
    registered = [row[0] is not None for row in state.broker.registry.fields(ids, "id")]
    runs = state.scheduler_runs()
    out = []
    for wid, reg in zip(ids, registered):
        fresh = now - synced[wid] <= STALE_S
        out.append({"worker": wid, "synced_at": synced[wid], "registered": reg, "schedules": runs.get(wid),
                    "state": "dead" if not reg else "alive" if fresh else "stale"})
    return out


def describe(state: ScheduleState, now: float | None = None) -> dict[str, Any]:
    """{"schedulers": live scheduler ids, "wedged": ids of the stale ones (registered, not
    syncing), "scheduler_states": :func:`schedulers_seen`, "schedules": [one dict per
    schedule]} with, per schedule: name, task, when (cron and tz, or every), next_fire
    and last_fire (UNIX s; last_fire as stored when that is not a time), last_job,
    last_job_status, last_status, paused, counts of missed/overlap/paused fire times, run_by
    (the live schedulers running it),
    wedged_by (the stale ones running it), late_s (seconds past a fire time not handled,
    beyond the grace, else 0) and status: "removed" (no live or stale scheduler runs it
    although some run: removed from their code, or the workers that have it are down; or
    a worker started without it in its code), "paused", "ok", "late" (a live scheduler
    runs it and it does not fire, or only stale ones run it: a scheduler wedged, its
    worker alive) or "no scheduler" (none is registered that runs it)."""
    now = time.time() if now is None else now
    seen = schedulers_seen(state, now)
    live = [e for e in seen if e["state"] == "alive"]
    stale = [e for e in seen if e["state"] == "stale"]
    rows = []
    states = state.read()
    jobs = [h.get("last_job") for h in states.values()]
    pipe = state.redis.pipeline(transaction=False)
    for j in jobs:
        pipe.hget(state.keys.job(j or "-"), "status")
    statuses = pipe.execute() if jobs else []
    for (name, h), job_status in zip(states.items(), statuses):
        run_by, wedged_by = ([e["worker"] for e in group if e["schedules"] is None or name in e["schedules"]]
                             for group in (live, stale))
        rows.append(_row(name, h, job_status, now, bool(live), run_by, wedged_by))
    return {"schedulers": [e["worker"] for e in live], "wedged": [e["worker"] for e in stale],
            "scheduler_states": seen, "schedules": rows}


def _row(name: str, h: dict[str, str], job_status: str | None, now: float, alive: bool,
         run_by: list[str], wedged_by: list[str]) -> dict[str, Any]:
    d = json.loads(h.get("def") or "{}")
    raw = h.get("last_fire") or "0"
    last_ms = stored_ms(raw)
    row: dict[str, Any] = {
        "name": name, "task": d.get("path"), "queue": d.get("queue"),
        "when": f"cron {d['cron']} {d.get('tz', 'UTC')}" if d.get("cron") else f"every {d.get('every_s')} s",
        "last_fire": (raw if last_ms is None else last_ms / 1000)  # as stored when it is no time
        if raw != "0" and h.get("last_status") else None,  # else: never fired
        "last_status": h.get("last_status"),
        "last_job": h.get("last_job"), "last_job_status": job_status, "paused": h.get("paused") == "1",
        "missed": int(h.get("count_missed") or 0), "overlap": int(h.get("count_overlap") or 0),
        "next_fire": None, "late_s": 0.0, "run_by": run_by, "wedged_by": wedged_by,
    }
    try:
        s = make_schedule(name, d.get("path") or "?", cron=d.get("cron"), every=d.get("every_s"),
                          tz=d.get("tz", "UTC") if d.get("cron") else None, grace_s=d.get("grace_s", 60.0))
    except ConfigError:
        row["status"] = "no definition"
        return row
    expected = s.next_after(last_ms) / 1000 if last_ms else None
    row["next_fire"] = s.next_after(int(now * 1000)) / 1000
    if expected is not None and now > expected + s.grace_s + LATE_S:
        row["late_s"] = round(now - expected - s.grace_s, 3)
    removed = (h.get("removed_at") and not run_by) or (alive and not run_by and not wedged_by)
    row["status"] = ("removed" if removed else "paused" if row["paused"] else
                     ("late" if row["late_s"] else "ok") if run_by else
                     "late" if wedged_by else "no scheduler")
    return row


def stored_ms(text: str) -> int | None:
    """Stored time ``text`` (ms since the epoch) as an int, None when it is not one a date
    can show (not an integer, or past year 9999): shown as it is, never computed with."""
    try:
        ms = int(text)
        datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return ms


def forget(state: ScheduleState, name: str) -> None:
    """Delete schedule ``name`` from Redis (``runtime schedules forget``): refused while a
    live scheduler runs it, which would publish it again. Raises ScheduleNotFound,
    ScheduleRefused (one line)."""
    row = _one(state, name)
    if row["run_by"]:
        raise ScheduleRefused(f"schedule {name!r} is still defined: live scheduler(s) {', '.join(row['run_by'])} "
                              f"run it; remove it from the code or runtime.toml and restart them first")
    state.forget(name)


def _one(state: ScheduleState, name: str) -> dict[str, Any]:
    """Schedule ``name``'s row of :func:`describe`. Raises ScheduleNotFound."""
    state.definition(name)  # unknown: ScheduleNotFound
    return next(r for r in describe(state)["schedules"] if r["name"] == name)


def run_now(client: Any, name: str) -> str:
    """Queue schedule ``name``'s job now (id ``NAME@now-<ms>``), whatever its fire times,
    pause and overlap; returns the job id. Raises ScheduleNotFound for an unknown name,
    ScheduleRefused for a removed one (no live scheduler runs it: its definition may be
    gone from the code)."""
    state = ScheduleState(client.broker)
    d = state.definition(name)
    if _one(state, name)["status"] == "removed":
        raise ScheduleRefused(f"schedule {name!r} was removed (no live scheduler runs it): not run; "
                              f"runtime schedules forget {name} deletes it")
    job_id = f"{name}@now-{int(time.time() * 1000)}"  # runtime.unique.RUN_NOW_ID: refused to callers
    job = client._new(d["path"], d.get("params") or {}, d.get("queue", "default"), int(d.get("priority", 0)),
                      None, None, job_id=job_id, own_id=True)
    got = str(client._enqueue([job]).get(job.id, job.id))
    state.ran_now(name, got)
    return got
