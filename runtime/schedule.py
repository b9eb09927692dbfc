"""Schedules: periodic jobs, as plain data and rules (no I/O).

A schedule queues a job of one task, with fixed params, queue and priority, at each of its
fire times: every ``every_s`` seconds (fire times are the multiples of the period since
the UNIX epoch, so every worker computes the same ones), or at the wall-clock times of a
5-field ``cron`` expression in the zone ``tz`` (zoneinfo; parsed by croniter). Declared
in code with :func:`periodic` on a task, or in ``runtime.toml`` (``[schedules.NAME]``,
runtime.scheduler.config).

Daylight saving time (a cron's times are wall-clock times in ``tz``):

- a wall time that does not exist (spring forward, 02:30 on the day clocks go from 02:00
  to 03:00) fires once, shifted forward by the gap (03:30 new time); a time shifted onto
  another fire time of the same schedule fires once for both;
- a wall time that occurs twice (fall back, 02:30 on the day clocks go from 03:00 back to
  02:00) fires once, at its first occurrence. So ``*/15 * * * *`` does not fire during the
  repeated hour; use ``every=`` for a fixed interval of real time.

Fire times are integer milliseconds since the epoch (UTC). The job of a fire time has the
id ``NAME@2026-12-06T05:00:00.000Z`` (:meth:`Schedule.job_id`; the time part always 24
characters, so a schedule's ids sort by fire time and name one fire time each): the same
on every worker, so
with the "last fired" time kept with the enqueue in one Lua script (fire.lua), each fire
time is queued once whatever the number of schedulers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError, InvalidParams
from .job import encode_params
from .queuenames import queue_name_problem
from .unique import check_id

#: Missed-run policies besides an int N (catch up the newest N missed fire times).
MISSED = ("skip", "once")
#: Overlap policies: queue the next run anyway, or skip it while the last one has not ended.
OVERLAP = ("allow", "skip")
#: Shortest period of ``every``, seconds.
MIN_EVERY_S = 0.1
#: Longest period of ``every``, seconds: 10 years, as the longest delay of a job
#: (runtime.client.limits.MAX_DELAY_S). Fire times are multiples of the period since the
#: epoch, so a longer one would first fire decades from now, and past about 8,000 years
#: its fire times leave the years a datetime (and so a fire-time job id) can write.
MAX_EVERY_S = 10 * 365 * 86_400.0
#: Most fire times handled in one step (one fire.lua call): the newest ones; the older
#: ones are dropped, counted as missed (:meth:`Schedule.plan`).
MAX_FIRES = 100
#: Fire times of a cron counted one by one beyond the newest :data:`MAX_FIRES` (croniter
#: takes ~20 us each: at most ~0.2 s of a worker's CPU after a long outage); the older
#: ones are counted from their spacing (:meth:`Schedule.due_counted`).
MAX_COUNTED = 10_000
#: The widest a DST change moves wall clocks from UTC, and more: the margin, in wall time,
#: within which cron times are mapped to UTC and compared (seconds).
_MARGIN = timedelta(hours=3)


@dataclass(frozen=True)
class Schedule:
    """One schedule. ``missed``, for the fire times missed (they passed while no
    scheduler ran, or were not queued within ``grace_s`` seconds: :meth:`plan`): "skip"
    (dropped), "once" (they coalesce into one run, unless a fire time on time is queued
    at the same moment) or N >= 1 (the newest N of them run, oldest first). ``overlap``:
    "allow", or "skip" a fire time while the job of the last one is waiting or running.
    Build with :func:`make_schedule` (which checks the values)."""

    name: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    cron: str | None = None
    every_s: float | None = None
    tz: str = "UTC"
    missed: str | int = "skip"
    grace_s: float = 60.0
    overlap: str = "allow"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def job_id(self, fire_ms: int) -> str:
        """The id of the job of fire time ``fire_ms``: ``NAME@2026-12-06T05:00:00.000Z``,
        the time part of fixed width (milliseconds always written), so the ids of one
        schedule sort by time and ``NAME`` is all but the last 25 characters."""
        at = datetime.fromtimestamp(fire_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self.name}@{at}.{fire_ms % 1000:03d}Z"

    def next_after(self, after_ms: int) -> int:
        """The first fire time later than ``after_ms`` (ms)."""
        if self.every_s is not None:
            period = round(self.every_s * 1000)
            return (after_ms // period + 1) * period
        from croniter import croniter
        zone = self.zone
        it = croniter(self.cron, _wall(after_ms, zone) - _MARGIN)
        best: int | None = None
        while True:
            naive = it.get_next(datetime)
            t = _utc_ms(naive, zone)
            if t > after_ms and (best is None or t < best):
                best = t
            if best is not None and naive > _wall(best, zone) + _MARGIN:
                return best

    def due(self, after_ms: int, now_ms: int, limit: int = MAX_FIRES) -> list[int]:
        """The fire times in (``after_ms``, ``now_ms``], oldest first; the newest ``limit``
        of them when there are more."""
        return self.due_counted(after_ms, now_ms, limit)[0]

    def due_counted(self, after_ms: int, now_ms: int, limit: int = MAX_FIRES) -> tuple[list[int], int]:
        """(:meth:`due`, how many older fire times in (``after_ms``, ``now_ms``] it leaves
        out). For a cron, exact up to :data:`MAX_COUNTED` left out; beyond, the rest of the
        span is counted at the mean spacing of those: an estimate, exact for a regular cron
        (``*/5 * * * *``), within a few per cent for an irregular one (weekdays only)."""
        if self.every_s is not None:
            period = round(self.every_s * 1000)
            last = now_ms // period * period
            first = max(after_ms // period + 1, last // period - limit + 1) * period
            return list(range(first, last + 1, period)), max(0, last // period - after_ms // period - limit)
        from croniter import croniter
        zone = self.zone
        it = croniter(self.cron, _wall(now_ms, zone) + _MARGIN)
        found: set[int] = set()
        floor = _wall(after_ms, zone) - _MARGIN
        low: int | None = None  # once enough are found, the oldest: no older one is collected
        while True:
            naive = it.get_prev(datetime)
            if naive < floor:
                break
            t = _utc_ms(naive, zone)
            if after_ms < t <= now_ms and (low is None or t >= low):
                found.add(t)
                if low is None and len(found) >= limit + MAX_COUNTED:
                    low = min(found)
            if low is not None and naive < _wall(low, zone) - _MARGIN:  # every one from low on found
                break
        times = sorted(found)
        left_out = max(0, len(times) - limit)
        if low is not None:  # those in (after_ms, low) counted at the mean spacing of the found ones
            left_out += -(-(low - after_ms) * (len(times) - 1) // (times[-1] - low)) - 1
        return times[-limit:], left_out

    def plan(self, after_ms: int, now_ms: int, since_ms: int | None = None) -> Plan:
        """What to do at ``now_ms`` with the fire times since ``after_ms`` (the last one
        fired): (fire time, run it) for each of the newest :data:`MAX_FIRES`, oldest
        first, and how many older ones are dropped (not run, whatever the policy); those
        not run and those dropped are counted as missed (fire.lua).

        A fire time is on time, and runs under every policy, when it came while the
        scheduler calling was running (after ``since_ms``, the end of its previous tick;
        None: no bound) and is at most ``grace_s`` seconds late. The others were missed
        (no scheduler ran then, or it was blocked past the grace): ``skip`` runs none of
        them, ``once`` the newest unless a fire time on time runs now, N the newest N."""
        times, dropped = self.due_counted(after_ms, now_ms)
        on_time = [t for t in times if now_ms - t <= self.grace_s * 1000 and (since_ms is None or t > since_ms)]
        missed = times[:len(times) - len(on_time)]
        if self.missed == "skip":
            keep: set[int] = set()
        elif self.missed == "once":
            keep = set(missed[-1:]) if not on_time else set()
        else:
            keep = set(missed[-int(self.missed):])
        return Plan(after_ms, [(t, t in keep or t in on_time) for t in times], dropped)

    def to_json(self) -> str:
        """The definition as JSON (stored in Redis for ``runtime schedules``)."""
        return json.dumps({"name": self.name, "path": self.path, "params": self.params, "queue": self.queue,
                           "priority": self.priority, "cron": self.cron, "every_s": self.every_s, "tz": self.tz,
                           "missed": self.missed, "grace_s": self.grace_s, "overlap": self.overlap},
                          sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Plan:
    """What a scheduler does with a schedule's fire times since ``after_ms`` (ms, the last
    one fired as it knows): ``fires``, (fire time in ms, run it) for the newest, oldest
    first; ``dropped``, how many older ones it leaves out (not run: missed)."""

    after_ms: int
    fires: list[tuple[int, bool]]
    dropped: int = 0


def _wall(t_ms: int, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time in ``zone`` of instant ``t_ms``."""
    return datetime.fromtimestamp(t_ms / 1000, zone).replace(tzinfo=None)


def _utc_ms(naive: datetime, zone: ZoneInfo) -> int:
    """The instant (ms) of wall time ``naive`` in ``zone``: a repeated time at its first
    occurrence (fold 0), a missing one shifted forward by the gap (zoneinfo's fold 0)."""
    return round(naive.replace(tzinfo=zone, fold=0).timestamp() * 1000)


def make_schedule(name: str, path: str, *, params: Mapping[str, Any] | None = None, queue: str = "default",
                  priority: int = 0, cron: str | None = None, every: timedelta | float | None = None,
                  tz: str | None = None, missed: str | int = "skip", grace_s: float = 60.0,
                  overlap: str = "allow") -> Schedule:
    """A checked :class:`Schedule` (``every``: a timedelta or seconds; ``tz``: the zone of
    a ``cron``, default UTC, refused with ``every``, whose fire times are the same in
    every zone). Raises ConfigError, one line naming the schedule."""
    where = f"schedule {name!r}"
    try:
        check_id(name, "schedule name")
    except InvalidParams as exc:
        raise ConfigError(f"{exc} (a schedule's name is part of its jobs' ids)") from None
    if "@" in name:
        raise ConfigError(f"{where}: a schedule name may not hold '@' (its jobs' ids are NAME@TIME)")
    if (cron is None) == (every is None):
        raise ConfigError(f"{where}: give cron= or every=, exactly one")
    every_s = every.total_seconds() if isinstance(every, timedelta) else every
    if every_s is not None:
        if not isinstance(every_s, (int, float)) or isinstance(every_s, bool):
            raise ConfigError(f"{where}: every must be a number of seconds or a timedelta, got {every!r}")
        if not (math.isfinite(every_s) and MIN_EVERY_S <= every_s <= MAX_EVERY_S):
            raise ConfigError(f"{where}: every must be at least {MIN_EVERY_S} seconds and at most "
                              f"{MAX_EVERY_S:.0f} (10 years), got {every!r}")
        if tz is not None:
            raise ConfigError(f"{where}: tz has no meaning with every (its fire times are multiples of the period "
                              f"since the epoch, the same in every zone); drop tz, or use cron for wall-clock times")
    if cron is not None:
        _check_cron(where, cron)
    tz = "UTC" if tz is None else tz
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"{where}: unknown time zone {tz!r} (an IANA name such as 'Europe/Paris')") from None
    _check_policies(where, missed, grace_s, overlap)
    if not isinstance(priority, int) or not -100 <= priority <= 100:
        raise ConfigError(f"{where}: priority must be an int in [-100, 100], got {priority!r}")
    problem = queue_name_problem(queue)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{where}: params must be a JSON object, got {type(params).__name__}")
    try:  # as queue_job refuses them: a fire would fail to encode them every time
        encode_params(dict(params or {}), 1 << 20)
    except InvalidParams as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Schedule(name, path, dict(params or {}), queue, priority, cron,
                    None if every_s is None else float(every_s), tz, missed, float(grace_s), overlap)


def _check_cron(where: str, cron: Any) -> None:
    from croniter import CroniterError, croniter
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ConfigError(f"{where}: bad cron {cron!r} (five fields: minute hour day-of-month month day-of-week)")
    try:  # a valid expression may never match (February 31st)
        croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise ConfigError(f"{where}: cron {cron!r} never fires") from None


def _check_policies(where: str, missed: Any, grace_s: Any, overlap: Any) -> None:
    if not (missed in MISSED or (isinstance(missed, int) and not isinstance(missed, bool) and 1 <= missed <= 100)):
        raise ConfigError(f"{where}: missed must be 'skip', 'once' or a number of runs to catch up (1..100), "
                          f"got {missed!r}")
    if not isinstance(grace_s, (int, float)) or not 0 < grace_s < math.inf:
        raise ConfigError(f"{where}: grace_s must be a positive number of seconds, got {grace_s!r}")
    if overlap not in OVERLAP:
        raise ConfigError(f"{where}: overlap must be 'allow' or 'skip', got {overlap!r}")


def _check_signature(s: Schedule, target: Any) -> None:
    """Raise ConfigError when the params of ``s`` do not bind to function ``target``'s
    signature (a class task takes its params as one dict: not checked)."""
    import inspect

    from .binding import params_problem
    if inspect.isclass(target) or not callable(target):
        return
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    problem = params_problem(s.path, sig, s.params)
    if problem:
        raise ConfigError(f"schedule {s.name!r}: {problem}")


def periodic(*, name: str | None = None, **options: Any) -> Any:
    """Queue a task's job on a schedule: ``@periodic(cron="*/5 * * * *", tz="Europe/Paris")``
    or ``@periodic(every=timedelta(minutes=1), params={...})``; the options of
    :func:`make_schedule`. Stacks (one schedule each; give each a ``name``, by default the
    task's path) and marks the target a task. Raises ConfigError at import for a bad value.
    """
    from .tasks import task

    def wrap(target: Any) -> Any:
        probe = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
        s = make_schedule(name or probe.replace("<", "").replace(">", ""), probe, **options)  # check now
        _check_signature(s, target)
        if "__runtime_options__" not in getattr(target, "__dict__", ()):
            task(target)
        schedules = list(target.__dict__.get("__runtime_schedules__", ()))
        schedules.append((name, dict(options)))
        target.__runtime_schedules__ = schedules
        return target

    return wrap
