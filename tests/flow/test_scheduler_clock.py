"""The scheduler and the Redis clock: no job is queued before its fire time on the server's
clock, whatever the scheduler's estimate of that clock (a local clock ahead, a round trip
slowed by a busy machine); fire.lua answers 'early' for a fire time not come yet. And a
scheduler that stops syncing while its worker lives is shown wedged, its schedules late."""

from __future__ import annotations

import json
import threading
import time

from helpers import cli, wait_until

from runtime.schedule import make_schedule
from runtime.scheduler.loop import SchedulerLoop
from runtime.scheduler.report import describe
from runtime.scheduler.state import ScheduleState

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def _server_ms(client) -> int:
    sec, usec = client.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


class StepClock:
    """A local clock that moves only when told (UNIX s)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class SlowSyncState(ScheduleState):
    """Syncs whose round trip takes ``rtt_s`` on the local clock, the server reading its
    clock (``skew_s`` ahead of the local one) halfway through."""

    def __init__(self, broker, clock: StepClock, rtt_s: float, skew_s: float) -> None:
        super().__init__(broker)
        self.clock, self.rtt_s, self.skew_s = clock, rtt_s, skew_s

    def sync(self, worker_id, schedules, first):
        self.clock.t += self.rtt_s / 2
        server = self.clock.t + self.skew_s
        _, found = super().sync(worker_id, schedules, first)
        self.clock.t += self.rtt_s / 2
        return server, found


def test_a_slow_sync_round_trip_never_puts_the_estimate_of_the_server_clock_ahead(client):
    s = make_schedule("rtt", "testtasks.add", params={"a": 1, "b": 1}, every=60)
    clock = StepClock(1_764_000_000.0)
    loop = SchedulerLoop(SlowSyncState(client.broker, clock, rtt_s=0.2, skew_s=5.0), [s], "w-rtt", clock=clock)
    loop.sync()
    server_now = clock.t + 5.0
    assert loop.now_ms() <= server_now * 1000  # late by up to the round trip, never early
    assert loop.now_ms() >= (server_now - 0.2) * 1000


def test_fire_lua_refuses_a_fire_time_not_come_yet_on_the_server_clock(client):
    s = make_schedule("later", "testtasks.add", params={"a": 1, "b": 2}, every=1)
    state = ScheduleState(client.broker)
    now = _server_ms(client) // 1000 * 1000
    client.redis.hset(client.broker.keys.schedule("default", s.name), "last_fire", now - 2000)
    fired = state.fire(s, [(now - 1000, True), (now + 60_000, True)])
    assert fired.outcomes == ["queued", "early"] and fired.last_fire == now - 1000
    assert abs(fired.server_ms - _server_ms(client)) < 5000
    assert client.redis.exists(client.broker.keys.job(s.job_id(now + 60_000))) == 0
    assert client.redis.hget(client.broker.keys.schedule("default", s.name), "last_fire") == str(now - 1000)


class AheadState(ScheduleState):
    """Syncs that report the server's clock ``ahead_s`` later than it is: the scheduler's
    estimate of the Redis clock runs ahead (a local clock that jumped, a bad offset)."""

    def __init__(self, broker, ahead_s: float) -> None:
        super().__init__(broker)
        self.ahead_s = ahead_s

    def sync(self, worker_id, schedules, first):
        server, found = super().sync(worker_id, schedules, first)
        return server + self.ahead_s, found


def test_no_job_is_queued_before_its_fire_time_on_the_redis_clock_with_a_clock_ahead(client):
    """A schedule every 0.1 s fired by a scheduler that believes the Redis clock 250 ms
    later than it is: every job's queued_at (the server's clock) is at or after its fire
    time, and none is missed or skipped."""
    s = make_schedule("ahead", "testtasks.add", params={"a": 1, "b": 1}, every=0.1)
    loop = SchedulerLoop(AheadState(client.broker, 0.25), [s], "w-ahead")
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    queued = client.broker.keys.status("default", "queued")
    try:
        wait_until(lambda: len([i for i in client.redis.zrange(queued, 0, -1) if i.startswith("default:ahead@")]) >= 15,
                   20, "15 fire times queued")
    finally:
        loop.stop()
        runner.join(10)
    jobs = client.live.get_many(sorted(i for i in client.redis.zrange(queued, 0, -1) if i.startswith("default:ahead@")))
    fires = []
    for job in jobs:
        fire_ms = int(job.history[0]["fire"])
        fires.append(fire_ms)
        assert job.queued_at * 1000 >= fire_ms, (job.id, job.queued_at, fire_ms)
    assert [b - a for a, b in zip(fires, fires[1:])] == [100] * (len(fires) - 1)
    h = client.redis.hgetall(client.broker.keys.schedule("default", s.name))
    assert "count_missed" not in h


def test_a_wedged_scheduler_shows_its_schedule_late_and_no_scheduler_only_when_none_is_registered(settings, client):
    """A worker alive in the registry whose scheduler stopped syncing (a job holding its
    CPU): its schedule is late and the listing says wedged, not 'no scheduler'; once the
    worker is gone from the registry, 'no scheduler'."""
    s = make_schedule("wedge", "testtasks.add", params={"a": 1, "b": 1}, every=1)
    state = ScheduleState(client.broker)
    client.broker.registry.write_entry("w-wedged", {"id": "w-wedged", "queues": "default"})
    state.sync("w-wedged", [s], first=True)
    client.redis.zadd(client.broker.keys.schedulers, {"w-wedged": time.time() - 45})  # its last sync, 45 s ago
    data = describe(state)
    row = data["schedules"][0]
    assert data["schedulers"] == [] and data["wedged"] == ["w-wedged"]
    assert row["status"] == "late" and row["wedged_by"] == ["w-wedged"] and row["run_by"] == []
    text = cli(settings, "schedules").stdout
    assert "wedge  late  (its scheduler is wedged: w-wedged registered, not syncing)" in text, text
    assert "NO SCHEDULER SYNCING: 1 registered but wedged" in text and "NO LIVE SCHEDULER" not in text, text
    client.redis.delete(client.broker.keys.worker("w-wedged"))  # its worker is gone: dead, not wedged
    data = json.loads(cli(settings, "schedules", "--json").stdout)
    assert data["wedged"] == [] and data["schedules"][0]["status"] == "no scheduler"
    assert "NO LIVE SCHEDULER: nothing fires" in cli(settings, "schedules").stdout
