"""What the workers page shows: each live worker and supervisor with its health (ok,
degraded and why), its RSS over the last hour as a chart, and the workers found dead
(registered but silent, or lost, crashed or killed in the last hour)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..client.reader import Reader
from ..settings import Settings

#: States a worker reports when it is not serving as it should (runtime.worker.state).
_DEGRADED_STATES = {"degraded": "Redis or MongoDB unreachable", "throttled": "MongoDB behind: not claiming",
                    "recycling": "recycling", "stopping": "stopping", "draining": "draining"}
#: Events that mean a worker process died (runtime.broker.registry.EVENT_KEYS).
DEATHS = ("lost", "crash", "kill")
#: How far back the page lists deaths, seconds.
DEAD_WINDOW_S = 3600.0
#: RSS at or over this share of the worker's memory limit marks it degraded.
NEAR_LIMIT = 0.9
CHART_W, CHART_H = 160, 28


def seconds_of(iso: str | None) -> float | None:
    """UNIX seconds of an ISO-8601 time the read API returned, None for none."""
    return datetime.fromisoformat(iso).timestamp() if iso else None


def rss_chart(samples: list[list[float]]) -> dict[str, Any] | None:
    """An SVG polyline of ``samples`` ([[UNIX s, bytes], ...], oldest first): ``{"points":
    "x,y ...", "w", "h", "low", "high" (bytes), "span_s"}``; None for no sample."""
    if not samples:
        return None
    t0, t1 = samples[0][0], samples[-1][0]
    low, high = min(s[1] for s in samples), max(s[1] for s in samples)
    span_t, span_b = max(t1 - t0, 1.0), max(high - low, 1.0)
    points = " ".join(f"{(t - t0) / span_t * CHART_W:.1f},{CHART_H - 2 - (b - low) / span_b * (CHART_H - 4):.1f}"
                      for t, b in samples)
    if len(samples) == 1:  # one sample: a flat line across
        points = f"0,{CHART_H / 2:.1f} {CHART_W},{CHART_H / 2:.1f}"
    return {"points": points, "w": CHART_W, "h": CHART_H, "low": low, "high": high, "span_s": t1 - t0}


def health(w: dict[str, Any], settings: Settings, now: float) -> list[str]:
    """Why the live entry ``w`` is degraded ([] when it is not): a late heartbeat, a
    state other than running, RSS near its memory limit, a supervisor short of processes."""
    why = []
    beat = seconds_of(w.get("heartbeat_at"))
    if beat is not None and now - beat > 2 * settings.heartbeat_interval_s:
        why.append(f"heartbeat {now - beat:.1f} s ago (every {settings.heartbeat_interval_s:g} s)")
    state = str(w.get("state") or "")
    if state in _DEGRADED_STATES:
        why.append(_DEGRADED_STATES[state] + (f": {w['recycle']}" if w.get("recycle") else ""))
    limit, rss = w.get("mem_limit_bytes"), w.get("rss_bytes")
    if limit and rss and rss >= NEAR_LIMIT * limit:
        why.append(f"RSS {rss / 2**20:.0f} MiB, {100 * rss / limit:.0f} % of its limit")
    if w.get("kind") == "supervisor" and w.get("processes") is not None \
            and len(w.get("children") or []) < int(w["processes"]):
        why.append(f"{len(w.get('children') or [])} of {w['processes']} worker processes up")
    return why


def workers_context(reader: Reader, settings: Settings, now: float | None = None) -> dict[str, Any]:
    """``{"workers": [entry + "health" ([] or reasons), "chart", "busy"], "dead": [{"id",
    "why", "at", "pid", "host"}], "events": [newest 20]}``."""
    now = time.time() if now is None else now
    workers = reader.workers()
    for w in workers:
        w["health"] = health(w, settings, now)
        w["chart"] = rss_chart(w.get("rss_history") or [])
        w["busy"] = sum(1 for r in w.get("running") or [] if r.get("run", True))
    dead: list[dict[str, Any]] = [{"id": i, "why": "registered, but its heartbeat stopped (its jobs come back "
                                   "when a reaper sees it gone)", "at": None, "pid": None, "host": None}
                                  for i in reader.unheard()]
    events = reader.events(50)
    for e in events:
        at = seconds_of(e.get("at"))
        if e.get("event") in DEATHS and at is not None and now - at <= DEAD_WINDOW_S:
            dead.append({"id": e.get("worker") or "-", "why": f"{e['event']}: {e.get('reason') or ''}".rstrip(": "),
                         "at": e.get("at"), "pid": e.get("pid"), "host": e.get("host")})
    return {"workers": workers, "dead": dead, "events": events[:20]}
