"""The scheduler every worker may run: a greenlet that sleeps until the next fire time of
its schedules and fires them (runtime.scheduler.state, fire.lua).

Any number of workers run it at once: they all fire each fire time, and fire.lua queues it
once (its job id is derived from the schedule and the fire time, and "last fired" moves in
the same script, in the hash slot of the schedule's queue). Between fire times it costs
Redis one sync every :data:`SYNC_S` seconds (TIME, then a pipeline: a ZADD marking it alive
and one HMGET per schedule); times are the Redis server's clock, so workers' clocks do not
matter. A schedule whose state moved to another queue (a worker started with it on that
queue: runtime.scheduler.state) is followed: its fire answers 'moved', the next sync adopts
the definition that moved it.

The scheduler sleeps on its own clock, corrected by an offset to the server's learnt at
each sync: the server's time minus the local time when the reply is in hand, so the
estimate lags the server by up to the round trip and never runs ahead of it (a busy
machine delays the reply, not the server's reading). A fire time is queued only once it
has come on the server's clock (fire.lua answers 'early' otherwise: the offset is learnt
again from that reply and the fire time tried again when it comes).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

from ..broker.connection import REDIS_ERRORS
from ..errors import ConfigError
from ..schedule import Schedule, make_schedule
from .state import ScheduleState

log = logging.getLogger("runtime.scheduler")

#: Seconds between a scheduler's syncs (it marks itself alive and learns what others fired).
SYNC_S = 10.0
#: A scheduler whose last sync is older than this many seconds is not running (shown so).
STALE_S = 3 * SYNC_S
#: Longest sleep after a Redis error before trying again, seconds.
RETRY_S = 2.0
#: Shortest sleep after fire.lua found a fire time early, seconds (a local clock stepped
#: back could otherwise make the scheduler call it again at once, and again).
EARLY_RETRY_S = 0.001
#: A scheduler starting while others run takes as its own the fire times of the last this
#: many seconds that they have not fired yet (they are a little late, not missed); with no
#: other scheduler alive, fire times before its start passed unfired: missed.
HANDOVER_S = 2.0


def adopt(mine: Schedule, definition: str) -> Schedule:
    """The schedule as ``definition`` (JSON, published by a worker started later) has it,
    or ``mine`` when that does not parse or check (logged)."""
    try:
        d = json.loads(definition)
        d["every"] = d.pop("every_s", None)
        if d["every"] is not None:
            d.pop("tz", None)  # written as UTC by to_json; no meaning with every
        name, path = d.pop("name"), d.pop("path")
        changed = make_schedule(name, path, **d)
    except (ValueError, TypeError, KeyError, ConfigError) as exc:
        log.warning("schedule %s: a newer definition does not check (%s); keeping this one", mine.name, exc)
        return mine
    log.info("schedule %s: adopting the definition of a newer worker", mine.name)
    return changed


class SchedulerLoop:
    """Fires ``schedules`` for worker ``worker_id``. ``sleep`` and ``clock`` (UNIX s) are
    the loop's (gevent's sleep and time.time in a worker; a test passes fakes)."""

    def __init__(self, state: ScheduleState, schedules: Sequence[Schedule], worker_id: str,
                 sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.time,
                 modules: Sequence[str] = ()) -> None:
        self.state = state
        self.schedules = list(schedules)
        self.worker_id = worker_id
        self.sleep = sleep
        self.clock = clock
        #: name -> last fire time (ms) as last learnt
        self.last: dict[str, int] = {}
        #: server clock minus ours, seconds
        self.offset = 0.0
        self.synced_at = -1e18
        self.first = True
        self.stopped = False
        self.sync_s = SYNC_S
        #: the modules this worker imported: a schedule of their tasks it lacks was removed
        self.modules = list(modules)
        self.started_ms = 0
        #: server ms up to which this scheduler has handled every fire time (its last tick);
        #: fire times after it are on time (runtime.schedule.Schedule.plan)
        self.since_ms = 0
        #: the last :meth:`fire_due` found a fire time not come yet on the server's clock
        self.early = False

    def now_ms(self) -> int:
        return int((self.clock() + self.offset) * 1000)

    def sync(self) -> None:
        """Mark this scheduler alive, learn the last fire times (and the clock offset), and
        follow what workers started after this one published: a changed definition is
        adopted, a schedule removed from their code stops firing here too."""
        first = self.first
        server, found = self.state.sync(self.worker_id, self.schedules, first)
        self.first = False
        local = self.clock()  # after the reply: the server read its clock before (module docstring)
        self.offset = server - local
        self.synced_at = local
        if first:
            self.started_ms = int(time.time() * 1000)  # the clock def_at and removed_at are in
            self.state.mark_removed([s.name for s in self.schedules], self.modules)
            self.state.prune(server)
            others = [w for w, t in self.state.schedulers().items()
                      if w != self.worker_id and server - t <= STALE_S]
            self.since_ms = int(server * 1000) - (int(HANDOVER_S * 1000) if others else 0)
        kept = []
        for s in self.schedules:
            got = found[s.name]
            self.last[s.name] = max(self.last.get(s.name, 0), got.last_fire)
            if got.removed_at > self.started_ms:
                log.info("schedule %s was removed by a newer worker's code: it stops firing here", s.name)
                continue
            was = s
            if got.def_at > self.started_ms and got.definition and got.definition != s.to_json():
                s = adopt(s, got.definition)
            if got.moved_to and s.queue == was.queue:  # its state left this queue, and its definition did not
                log.warning("schedule %s moved to queue %s by another worker's definition, which this one does not "
                            "follow: it stops firing here", s.name, got.moved_to)
                continue
            kept.append(s)
        if len(kept) < len(self.schedules):
            self.state.runs(self.worker_id, [s.name for s in kept])
        self.schedules = kept

    def next_fire(self, s: Schedule) -> int:
        """The next fire time of ``s`` not yet handled as far as this scheduler knows (ms)."""
        return s.next_after(self.last.get(s.name, self.now_ms()))

    def fire_due(self) -> int:
        """Fire every schedule whose next fire time has come; returns how many fire times
        were queued by this call. Fire times since the previous call are on time, older ones
        (before this scheduler ran) missed (runtime.schedule.Schedule.plan)."""
        queued = 0
        now = handled = self.now_ms()
        self.early = False
        for s in self.schedules:
            if self.next_fire(s) > now:
                continue
            plan = s.plan(self.last.get(s.name, now), now, self.since_ms)
            if not plan.fires:
                continue
            fired = self.state.fire(s, plan)
            if fired.outcomes[0] in ("moved", "absent"):  # nothing done: fired again once followed
                self._follow(s, fired.outcomes[0])
                handled = min(handled, plan.fires[0][0] - 1)
                continue
            self.last[s.name] = fired.last_fire
            queued += fired.outcomes.count("queued")
            if "early" in fired.outcomes:  # the server's clock is behind our estimate of it
                self.early = True
                self.offset = fired.server_ms / 1000 - self.clock()
                handled = min(handled, plan.fires[fired.outcomes.index("early")][0] - 1)  # still on time later
            if "stale" in fired.outcomes:  # planned again at once, from the last fire time learnt
                handled = min(handled, plan.fires[0][0] - 1)
            skipped = [o for o in fired.outcomes if o in ("missed", "overlap")] + ["dropped"] * fired.dropped
            if skipped:
                log.info("schedule %s: %d fire time(s) not run (%s)", s.name, len(skipped), ", ".join(set(skipped)))
        self.since_ms = handled  # every fire time up to it handled (not on an error: then late, not missed)
        return queued

    def _follow(self, s: Schedule, why: str) -> None:
        """Schedule ``s`` fired nothing, ``why``: 'moved' (its state moved to another queue:
        sync at the next step, adopting the definition that moved it) or 'absent' (no state
        under its queue: registered now, as when this scheduler started)."""
        if why == "moved":
            self.synced_at = -1e18
        else:
            self.state.register(self.worker_id, [s])

    def seconds_to_sleep(self) -> float:
        """Until the next fire time of any schedule or the next sync, whichever is first."""
        until_sync = self.synced_at + self.sync_s - self.clock()
        if not self.schedules:
            return max(0.0, until_sync)
        soonest = min(self.next_fire(s) for s in self.schedules)
        floor = EARLY_RETRY_S if self.early else 0.0
        return max(floor, min(until_sync, (soonest - self.now_ms()) / 1000))

    def step(self) -> float:
        """Sync when due, fire what is due; returns the seconds to sleep next."""
        if self.clock() - self.synced_at >= self.sync_s:
            self.sync()
        self.fire_due()
        return self.seconds_to_sleep()

    def run(self) -> None:
        """Loop until :meth:`stop`; a Redis error is logged and tried again."""
        while not self.stopped:
            try:
                wait = self.step()
            except REDIS_ERRORS as exc:
                log.warning("scheduler: Redis error (%s); trying again in %.0f s", exc, RETRY_S)
                wait = RETRY_S
            except Exception:  # noqa: BLE001 - a scheduler that dies stops every schedule: log, go on
                log.exception("scheduler: a step failed; trying again in %.0f s", RETRY_S)
                wait = RETRY_S
            if not self.stopped:
                self.sleep(wait)

    def stop(self) -> None:
        self.stopped = True
