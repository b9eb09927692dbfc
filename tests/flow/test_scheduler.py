"""The scheduler against a real Redis: fire.lua queues each fire time once; a fake clock
across DST in two zones; missed runs after a stopped scheduler under each policy;
overlap skip with a slow job; pause, resume and run-now; a scheduler that stops firing
is visible."""

from __future__ import annotations

import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from helpers import cli, wait_until

from runtime.schedule import make_schedule
from runtime.scheduler.loop import SchedulerLoop
from runtime.scheduler.report import describe
from runtime.scheduler.state import ScheduleState
from runtime.status import Status

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakeClockState(ScheduleState):
    """The Redis side as is, but the server time its syncs report is the fake clock's."""

    def __init__(self, broker, clock: FakeClock) -> None:
        super().__init__(broker)
        self.clock = clock

    def sync(self, worker_id, schedules, first):
        _, found = super().sync(worker_id, schedules, first)
        return self.clock(), found


def _loop(client, schedules, clock: FakeClock, start_s: float, worker_id: str = "w-test") -> SchedulerLoop:
    state = FakeClockState(client.broker, clock)
    for s in schedules:  # the schedules' clocks start at start_s (a new schedule has no missed runs)
        client.redis.hset(client.broker.keys.schedule("default", s.name), "last_fire", int(start_s * 1000))
    loop = SchedulerLoop(state, schedules, worker_id, sleep=clock.sleep, clock=clock)
    loop.sync_s = 1e9  # one sync: the fake clock jumps from fire time to fire time
    return loop


def _drive(loop: SchedulerLoop, clock: FakeClock, until_s: float) -> None:
    while clock.t < until_s:
        clock.sleep(max(loop.step(), 0.001))


def _jobs(client, prefix: str) -> list[str]:
    """The fire ids (runtime.schedule.Schedule.job_id) of the queued jobs of queue default
    whose id starts with ``prefix`` after the queue's part (a job id names its queue)."""
    queued = client.redis.zrange(client.broker.keys.status("default", "queued"), 0, -1)
    return sorted(i.partition(":")[2] for i in queued if i.startswith("default:" + prefix))


def _register(client, wid: str) -> None:
    client.broker.registry.write_entry(wid, {"id": wid, "queues": "default"})


# (name, zone, cron, three days around a DST change, wall times expected): the wall time
# falls in the spring-forward gap (fires shifted forward by the gap, once) or in the
# repeated hour of fall-back (fires at its first occurrence, in summer time, once)
DST_CASES = [
    ("paris-spring", "Europe/Paris", "30 2 * * *", [(3, 28), (3, 29), (3, 30)], ["02:30", "03:30", "02:30"]),
    ("paris-fall", "Europe/Paris", "30 2 * * *", [(10, 24), (10, 25), (10, 26)], ["02:30", "02:30", "02:30"]),
    ("ny-spring", "America/New_York", "30 2 * * *", [(3, 7), (3, 8), (3, 9)], ["02:30", "03:30", "02:30"]),
    ("ny-fall", "America/New_York", "30 1 * * *", [(10, 31), (11, 1), (11, 2)], ["01:30", "01:30", "01:30"]),
]


@pytest.mark.parametrize(("name", "tz", "cron", "days", "hours"), DST_CASES)
def test_a_fake_clock_across_dst_in_two_zones_fires_once_a_day(client, name, tz, cron, days, hours):
    s = make_schedule(name, "testtasks.add", params={"a": 1, "b": 1}, cron=cron, tz=tz)
    zone = ZoneInfo(tz)
    start = datetime(2026, *days[0], 0, 0, tzinfo=zone).timestamp()
    clock = FakeClock(start)
    _drive(_loop(client, [s], clock, start), clock, datetime(2026, *days[2], 23, 0, tzinfo=zone).timestamp())
    ids = _jobs(client, name + "@")
    local = [datetime.fromisoformat(i.split("@")[1].replace("Z", "+00:00")).astimezone(zone) for i in ids]
    assert [(d.month, d.day) for d in local] == days, ids  # one a day, the DST day included
    assert [d.strftime("%H:%M") for d in local] == hours, ids
    if "fall" in name:
        assert local[1].dst(), ids  # the first of the two 02:30 (01:30 in New York): summer time


@pytest.mark.parametrize(("missed", "queued"), [("skip", 0), ("once", 1), (3, 3)])
def test_missed_runs_after_a_stopped_scheduler(client, missed, queued):
    """Every minute, grace 30 s: the scheduler stops for 10 minutes, then comes back."""
    s = make_schedule(f"m-{missed}", "testtasks.add", params={"a": 1, "b": 1}, every=60, missed=missed, grace_s=30)
    start = 1_764_000_000.0  # on a minute
    clock = FakeClock(start)
    loop = _loop(client, [s], clock, start)
    _drive(loop, clock, start + 130)  # two fires on time
    assert len(_jobs(client, s.name + "@")) == 2
    clock.t = start + 12 * 60 + 45  # stopped: the fire times 3..12 pass unfired, the last 45 s ago (> grace)
    loop.step()
    jobs = _jobs(client, s.name + "@")
    assert len(jobs) == 2 + queued
    h = client.redis.hgetall(client.broker.keys.schedule("default", s.name))
    assert int(h["count_missed"]) == 10 - queued and int(h["last_fire"]) == int((start + 12 * 60) * 1000)
    loop.step()  # nothing more: handled
    assert len(_jobs(client, s.name + "@")) == 2 + queued


@pytest.mark.parametrize(("missed", "queued"), [("skip", 0), ("once", 1), (3, 3)])
def test_a_restarted_scheduler_treats_fire_times_of_its_downtime_as_missed_even_within_grace(client, missed, queued):
    """Every minute, grace 30 s: the only scheduler stops after two fires and a new one
    starts 10 s after the 12th fire time (within the grace): it came while none ran."""
    s = make_schedule(f"r-{missed}", "testtasks.add", params={"a": 1, "b": 1}, every=60, missed=missed, grace_s=30)
    start = 1_764_000_000.0
    clock = FakeClock(start)
    first = _loop(client, [s], clock, start, "w-first")
    _drive(first, clock, start + 130)
    first.state.leave("w-first")
    clock.t = start + 12 * 60 + 10
    again = SchedulerLoop(first.state, [s], "w-again", sleep=clock.sleep, clock=clock)
    again.step()
    assert len(_jobs(client, s.name + "@")) == 2 + queued
    h = client.redis.hgetall(client.broker.keys.schedule("default", s.name))
    assert int(h["count_missed"]) == 10 - queued and int(h["last_fire"]) == int((start + 12 * 60) * 1000)
    _drive(again, clock, start + 13 * 60 + 1)  # the next fire time comes while it runs: on time
    assert len(_jobs(client, s.name + "@")) == 3 + queued


def test_a_blocked_scheduler_runs_a_fire_time_it_wakes_up_to_within_grace(client):
    s = make_schedule("blocked", "testtasks.add", params={"a": 1, "b": 1}, every=60, missed="skip", grace_s=30)
    start = 1_764_000_000.0
    clock = FakeClock(start)
    loop = _loop(client, [s], clock, start)
    loop.step()
    clock.t = start + 60 + 20  # it ran, but woke 20 s late: late, not missed
    loop.step()
    assert _jobs(client, "blocked@") == [s.job_id(int((start + 60) * 1000))]


def test_fire_lua_queues_a_fire_time_once_and_never_goes_back(client):
    s = make_schedule("once", "testtasks.add", params={"a": 1, "b": 2}, every=1)
    state = ScheduleState(client.broker)
    t = 1_764_000_000_000
    client.redis.hset(client.broker.keys.schedule("default", s.name), "last_fire", t)
    assert state.fire(s, [(t + 1000, True)]).outcomes == ["queued"]
    assert state.fire(s, [(t + 1000, True)]).outcomes == ["done"]
    assert state.fire(s, [(t + 500, True), (t + 2000, False), (t + 3000, True)]).outcomes == ["done", "missed", "queued"]
    assert _jobs(client, "once@") == [s.job_id(t + 1000), s.job_id(t + 3000)]
    job = client.get_job("default:" + s.job_id(t + 1000))
    assert job.params == {"a": 1, "b": 2} and job.history[0]["schedule"] == "once"


def _schedule_module(task_dir, name: str, body: str) -> str:
    task_dir.write(f"{name}.py", f"""
        import time
        from datetime import timedelta
        from runtime import periodic

        {body}
        """)
    return name


def test_overlap_skip_with_a_slow_job(client, worker, task_dir):
    mod = _schedule_module(task_dir, "sched_overlap", """
        @periodic(every=timedelta(seconds=0.2), overlap="skip", name="slow")
        def slow() -> None:
            time.sleep(0.7)
        """)
    worker.start(task_modules=f"testtasks,{mod}")
    key = client.broker.keys.schedule("default", "slow")
    wait_until(lambda: int(client.redis.hget(key, "count_overlap") or 0) >= 6, 20, "fire times skipped for overlap")
    ids = [i for i in client.redis.zrange(client.broker.keys.status("default", "success"), 0, -1) if i.startswith("default:slow@")]
    wait_until(lambda: len([i for i in client.redis.zrange(client.broker.keys.status("default", "success"), 0, -1)
                            if i.startswith("default:slow@")]) >= 2, 20, "two runs")
    ids = [i for i in client.redis.zrange(client.broker.keys.status("default", "success"), 0, -1) if i.startswith("default:slow@")]
    runs = sorted((j.started_at, j.ended_at) for j in (client.get_job(i) for i in ids))
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert start >= end, runs  # never two at once
    assert all(j.startswith("default:slow@") for j in ids)


def test_pause_resume_run_now_and_the_listing(settings, client, worker, task_dir):
    mod = _schedule_module(task_dir, "sched_pause", """
        @periodic(every=0.2, name="tick", params={"n": 1})
        def tick(n: int) -> int:
            return n
        """)
    w = worker.start(task_modules=f"testtasks,{mod}")
    key = client.broker.keys.schedule("default", "tick")

    def done() -> int:
        return len([i for i in client.redis.zrange(client.broker.keys.status("default", "success"), 0, -1)
                    if i.startswith("default:tick@")])

    wait_until(lambda: done() >= 3, 15, "three runs")
    listed = json.loads(cli(settings, "schedules", "--json").stdout)
    row = listed["schedules"][0]
    assert row["name"] == "tick" and row["status"] == "ok" and row["last_job"].startswith("default:tick@")
    assert listed["schedulers"] == [w.id] and row["next_fire"] > time.time() - 1
    assert "tick  ok" in cli(settings, "schedules").stdout
    assert "  scheduler (synced " in cli(settings, "workers").stdout  # the registry says it runs one
    assert json.loads(cli(settings, "workers", "--json").stdout)[0]["scheduler_synced_at"] > time.time() - 30
    assert cli(settings, "schedules", "pause", "tick").exit_code == 0
    wait_until(lambda: int(client.redis.hget(key, "count_paused") or 0) >= 3, 10, "paused fire times")
    before = client.redis.zcard(client.broker.keys.status("default", "success")) + client.redis.zcard(client.broker.keys.status("default", "queued"))
    wait_until(lambda: int(client.redis.hget(key, "count_paused") or 0) >= 6, 10, "more paused fire times")
    after = client.redis.zcard(client.broker.keys.status("default", "success")) + client.redis.zcard(client.broker.keys.status("default", "queued"))
    assert after == before  # nothing queued while paused
    assert json.loads(cli(settings, "schedules", "--json").stdout)["schedules"][0]["status"] == "paused"
    now = cli(settings, "schedules", "run-now", "tick")
    assert now.exit_code == 0 and now.stdout.startswith("default:tick@now-")
    assert client.wait(now.stdout.strip(), timeout_s=10).status == Status.SUCCESS
    assert cli(settings, "schedules", "resume", "tick").exit_code == 0
    n = done()
    wait_until(lambda: done() >= n + 2, 10, "runs after resume")
    bad = cli(settings, "schedules", "pause", "nope")
    assert bad.exit_code == 3 and "no schedule 'nope'" in bad.stderr  # not found, as an unknown queue
    worker.stop(w)
    gone = json.loads(cli(settings, "schedules", "--json").stdout)
    assert gone["schedulers"] == [] and gone["schedules"][0]["status"] == "no scheduler"
    assert "NO LIVE SCHEDULER: nothing fires" in cli(settings, "schedules").stdout


def test_a_schedule_no_live_scheduler_fires_is_shown_late(client):
    s = make_schedule("stuck", "testtasks.add", every=1)
    state = ScheduleState(client.broker)
    _register(client, "w-other")  # alive in the worker registry, its scheduler wedged
    state.sync("w-other", [s], first=True)
    client.redis.hset(client.broker.keys.schedule("default", "stuck"), "last_fire", int((time.time() - 120) * 1000))
    row = describe(state)["schedules"][0]
    assert row["status"] == "late" and row["late_s"] > 50


def test_schedules_show_each_scheduler_s_liveness_from_the_worker_registry(settings, client):
    s = make_schedule("live", "testtasks.add", every=1)
    state = ScheduleState(client.broker)
    state.sync("w-ghost", [s], first=True)  # synced just now, but not in the worker registry
    data = json.loads(cli(settings, "schedules", "--json").stdout)
    assert data["schedulers"] == [] and data["schedules"][0]["status"] == "no scheduler"
    assert [(e["worker"], e["state"]) for e in data["scheduler_states"]] == [("w-ghost", "dead")]
    text = cli(settings, "schedules").stdout
    assert "NO LIVE SCHEDULER" in text and "w-ghost  dead  (not in the worker registry" in text
    _register(client, "w-ghost")
    _register(client, "w-wedged")
    client.redis.zadd(client.broker.keys.schedulers, {"w-wedged": time.time() - 300})
    data = json.loads(cli(settings, "schedules", "--json").stdout)
    assert {e["worker"]: e["state"] for e in data["scheduler_states"]} == {"w-ghost": "alive", "w-wedged": "stale"}
    assert data["schedulers"] == ["w-ghost"] and data["schedules"][0]["run_by"] == ["w-ghost"]
    assert data["schedules"][0]["status"] == "ok"
    assert "schedulers alive: 1" in cli(settings, "schedules").stdout


def test_a_schedule_no_live_scheduler_runs_is_removed_can_be_forgotten_and_is_not_run_now(settings, client):
    kept, gone = (make_schedule(n, "testtasks.add", params={"a": 1, "b": 2}, every=1) for n in ("kept", "gone"))
    state = ScheduleState(client.broker)
    _register(client, "w-old")
    state.sync("w-old", [kept, gone], first=True)
    assert [r["status"] for r in describe(state)["schedules"]] == ["ok", "ok"]
    state.leave("w-old")  # its worker stops; a new one runs without "gone" in its code
    _register(client, "w-new")
    state.sync("w-new", [kept], first=True)
    rows = {r["name"]: r for r in describe(state)["schedules"]}
    assert rows["gone"]["status"] == "removed" and rows["gone"]["run_by"] == [] and rows["kept"]["status"] == "ok"
    assert "gone  removed  (no live scheduler runs it" in cli(settings, "schedules").stdout
    refused = cli(settings, "schedules", "run-now", "gone")
    assert refused.exit_code == 7 and refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    assert "schedule 'gone' was removed" in refused.stderr
    still = cli(settings, "schedules", "forget", "kept")
    assert still.exit_code == 7 and still.stderr.count("\n") == 1 and "still defined" in still.stderr
    assert "w-new" in still.stderr
    assert cli(settings, "schedules", "forget", "gone").exit_code == 0
    assert [r["name"] for r in describe(state)["schedules"]] == ["kept"]
    assert cli(settings, "schedules", "forget", "gone").exit_code == 3
    assert cli(settings, "schedules", "run-now", "kept").exit_code == 0


def test_several_worker_processes_queue_exactly_one_job_per_fire_time(settings, client, workers, task_dir):
    """4 worker processes run the scheduler of one schedule firing every 0.1 s: over 200
    and more fire times, each one has exactly one job, run once, and none is skipped."""
    _schedule_module(task_dir, "sched_many", """
        @periodic(every=0.1, name="many")
        def many() -> None:
            pass
        """)
    # INFO: redis-py's DEBUG lines from the heartbeat thread can strand the hub on a log lock (gevent#2013)
    procs = [workers.start("--tasks", "testtasks,sched_many", "--greenlets", "10", "--log-level", "INFO")
             for _ in range(4)]
    for p in procs:
        workers.ready(p)
    wait_until(lambda: client.redis.zcard(client.broker.keys.schedulers) == 4, 20, "four schedulers")
    success = client.broker.keys.status("default", "success")

    def fired() -> list[str]:
        return [i for i in client.redis.zrange(success, 0, -1) if i.startswith("default:many@")]

    first = len(fired())
    wait_until(lambda: len(fired()) >= first + 210, 90, "210 more fire times run")
    for p in procs:  # stopped by pid; what they queued meanwhile is counted below
        p.terminate()
    for p in procs:
        p.wait(30)
    ids = sorted({i for s in ("queued", "started", "success", "interrupt")
                     for i in client.redis.zrange(client.broker.keys.status("default", s), 0, -1) if i.startswith("default:many@")})
    times = sorted(int(datetime.fromisoformat(i.split("@")[1].replace("Z", "+00:00")).timestamp() * 1000) for i in ids)
    assert len(times) == len(set(times)) >= 210
    assert [b - a for a, b in zip(times, times[1:])] == [100] * (len(times) - 1)  # none skipped
    h = client.redis.hgetall(client.broker.keys.schedule("default", "many"))
    assert "count_missed" not in h and int(h["last_fire"]) == times[-1]
    for job in client.live.get_many([i for i in ids if i in set(fired())]):
        assert job is not None and job.attempt == 1
        assert [e["status"] for e in job.history].count("queued") == 1


def test_the_lateness_of_a_schedule_that_stops_firing_is_a_prometheus_metric(client, worker):
    import socket
    import urllib.request
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = make_schedule("stuck", "elsewhere.job", every=1)  # a task of a module this worker does not import
    _register(client, "w-gone")  # a live worker whose scheduler is wedged
    ScheduleState(client.broker).sync("w-gone", [s], first=True)
    client.redis.hset(client.broker.keys.schedule("default", "stuck"), "last_fire", int((time.time() - 120) * 1000))
    worker.start(metrics_port=port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    line = next(x for x in text.splitlines() if x.startswith("runtime_schedule_late_seconds{"))
    assert 'runtime_schedule_name="stuck"' in line and 'runtime_schedule_status="late"' in line  # w-gone alive
    assert float(line.rsplit(" ", 1)[1]) > 50


def test_a_changed_or_removed_schedule_follows_the_newest_worker_without_a_restart(client):
    """Worker A runs the old code; B starts later with the schedule changed: A adopts it
    at its next sync. C starts later still without it (its module imported): A stops."""
    state = ScheduleState(client.broker)
    old = make_schedule("report", "mymod.report", params={"v": 1}, every=60)
    new = make_schedule("report", "mymod.report", params={"v": 2}, every=30, queue="reports")
    a = SchedulerLoop(state, [old], "w-a", modules=["mymod"])
    a.sync()
    time.sleep(0.01)  # B starts after A (def_at is in ms)
    b = SchedulerLoop(state, [new], "w-b", modules=["mymod"])
    b.sync()
    a.sync()
    assert a.schedules == [new]
    time.sleep(0.01)
    other = SchedulerLoop(state, [], "w-other", modules=["othermod"])  # does not serve mymod: removes nothing
    other.sync()
    a.sync()
    assert a.schedules == [new]
    c = SchedulerLoop(state, [], "w-c", modules=["mymod"])
    c.sync()
    a.sync()
    b.sync()
    assert a.schedules == [] and b.schedules == []
    assert client.redis.hget(client.broker.keys.schedule("reports", "report"), "removed_at")
    d = SchedulerLoop(state, [new], "w-d", modules=["mymod"])  # put back in the code: fires again
    d.sync()
    assert d.schedules == [new] and not client.redis.hget(client.broker.keys.schedule("reports", "report"), "removed_at")


def test_a_schedule_of_runtime_toml_fires_with_its_params_queue_and_priority(client, workers, task_dir):
    """A ``[schedules.NAME]`` table of the project's runtime.toml (the worker's folder)
    fires like an ``@periodic`` one: its task with its params, on its queue, at its
    priority, by a worker that runs no schedule in code."""
    task_dir.write("runtime.toml", """
        [schedules.toml-tick]
        task = "testtasks.add"
        every = 0.2
        params = {a = 2, b = 3}
        queue = "sched"
        priority = 4
        """)
    workers.ready(workers.start("--queues", "sched"))
    success = client.broker.keys.status("sched", "success")
    ids = wait_until(lambda: [i for i in client.redis.zrange(success, 0, -1) if i.startswith("sched:toml-tick@")],
                     20, "a run of the runtime.toml schedule")
    job = client.get_job(ids[0])
    assert (job.path, job.params, job.queue, job.priority, job.result) == ("testtasks.add", {"a": 2, "b": 3},
                                                                           "sched", 4, 5)


def test_a_runtime_toml_schedule_with_an_unknown_key_is_refused_naming_it(tmp_path):
    from runtime.errors import ConfigError
    from runtime.scheduler.config import file_schedules
    f = tmp_path / "runtime.toml"
    f.write_text('[schedules.nightly]\ntask = "testtasks.add"\ncron = "0 2 * * *"\nmised = "once"\n')
    with pytest.raises(ConfigError, match=r"\[schedules.nightly\] has unknown keys \['mised'\]"):
        file_schedules(f)
    f.write_text('[schedules.nightly]\ncron = "0 2 * * *"\n')
    with pytest.raises(ConfigError, match="needs task"):
        file_schedules(f)
