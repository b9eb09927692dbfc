"""A schedule's state lives in its queue's hash slot ({p}:sc:{queue}:{name}): a schedule
whose queue changes has its state taken along, fires no time twice and loses none; the
readers find it by name; a state that is gone is registered again. On a standalone Redis
and on the suite's Redis Cluster (the two queues in different slots)."""

from __future__ import annotations

from datetime import datetime

import gevent
from helpers import wait_until

from runtime.schedule import make_schedule
from runtime.scheduler.loop import SchedulerLoop
from runtime.scheduler.report import describe
from runtime.scheduler.state import ScheduleState

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)

OLD, NEW = "sched-a", "sched-b"  # in different hash slots


def _fired(client, queue: str, name: str) -> list[int]:
    """The fire times (ms) of the jobs schedule ``name`` queued on ``queue``."""
    ids = client.redis.zrange(client.broker.keys.status(queue, "queued"), 0, -1)
    stamps = [i.rpartition("@")[2] for i in ids if i.startswith(f"{queue}:{name}@")]
    return sorted(int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000) for t in stamps)


def test_a_schedule_whose_queue_changes_keeps_its_state_and_fires_each_time_once(client):
    """Worker A fires every 0.2 s on the old queue; B starts with the schedule on another
    queue: the state (last fire, pause flag, counts) moves there, A follows at once (its
    next fire answers 'moved', it adopts B's definition), and every fire time has exactly
    one job, on the old queue before the move and on the new one after."""
    old = make_schedule("mv", "testtasks.add", params={"a": 1, "b": 2}, every=0.2, queue=OLD)
    new = make_schedule("mv", "testtasks.add", params={"a": 1, "b": 2}, every=0.2, queue=NEW)
    a = SchedulerLoop(ScheduleState(client.broker), [old], "w-a", sleep=gevent.sleep)
    b = SchedulerLoop(ScheduleState(client.broker), [new], "w-b", sleep=gevent.sleep)
    runs = [gevent.spawn(a.run)]
    try:
        wait_until(lambda: len(_fired(client, OLD, "mv")) >= 3, 20, "three fire times on the old queue")
        client.redis.hincrby(client.broker.keys.schedule(OLD, "mv"), "count_missed", 7)
        runs.append(gevent.spawn(b.run))
        wait_until(lambda: a.schedules == [new], 20, "A to follow the move")
        wait_until(lambda: len(_fired(client, NEW, "mv")) >= 5, 20, "five fire times on the new queue")
    finally:
        a.stop()
        b.stop()
        gevent.killall(runs)
    before, after = _fired(client, OLD, "mv"), _fired(client, NEW, "mv")
    times = before + after
    assert before and after and max(before) < min(after)  # none on the old queue after the move
    assert [t2 - t1 for t1, t2 in zip(times, times[1:])] == [200] * (len(times) - 1)  # none twice, none lost
    k = client.broker.keys
    moved, state = client.redis.hgetall(k.schedule(OLD, "mv")), client.redis.hgetall(k.schedule(NEW, "mv"))
    assert moved["moved_to"] == NEW and "moved_to" not in state
    assert int(state["last_fire"]) == times[-1] and state["last_job"] == f"{NEW}:{new.job_id(times[-1])}"
    assert int(state["count_missed"]) >= 7  # the counts came along
    [row] = describe(ScheduleState(client.broker))["schedules"]
    assert (row["name"], row["queue"], row["last_job"]) == ("mv", NEW, state["last_job"])


def test_a_move_keeps_the_pause_and_a_fire_on_the_old_queue_does_nothing(client):
    state = ScheduleState(client.broker)
    old = make_schedule("pz", "testtasks.add", every=60, queue=OLD)
    new = make_schedule("pz", "testtasks.add", every=60, queue=NEW)
    state.sync("w-old", [old], first=True)
    t = int(client.redis.hget(client.broker.keys.schedule(OLD, "pz"), "last_fire")) - 120_000
    client.redis.hset(client.broker.keys.schedule(OLD, "pz"), "last_fire", t)
    assert state.fire(old, [(t + 60_000, True)]).outcomes == ["queued"]
    state.pause("pz")
    state.sync("w-new", [new], first=True)
    assert state.fire(old, [(t + 120_000, True)]).outcomes == ["moved"]  # fenced: the time is the new queue's
    assert state.fire(new, [(t + 60_000, True), (t + 120_000, True)]).outcomes == ["done", "paused"]
    state.pause("pz", False)  # found by name, in the new queue's slot
    assert client.redis.hget(client.broker.keys.schedule(NEW, "pz"), "paused") == "0"
    assert state.definition("pz")["queue"] == NEW and list(state.states()) == ["pz"]
    assert _fired(client, OLD, "pz") == [t + 60_000] and _fired(client, NEW, "pz") == []
    state.sync("w-back", [old], first=True)  # and back: the old key is written over, unmarked
    h = client.redis.hgetall(client.broker.keys.schedule(OLD, "pz"))
    assert "moved_to" not in h and int(h["last_fire"]) == t + 120_000 and h["count_paused"] == "1"
    assert state.fire(new, [(t + 180_000, True)]).outcomes == ["moved"]


def test_a_schedule_with_no_state_is_registered_again_and_fires(client):
    """A fire that finds no state (forgotten while a scheduler ran it) queues nothing,
    'absent'; the scheduler registers it again and fires the next time."""
    state = ScheduleState(client.broker)
    s = make_schedule("gone", "testtasks.add", every=0.2, queue=OLD)
    assert state.fire(s, [(1_000, True)]).outcomes == ["absent"]
    loop = SchedulerLoop(state, [s], "w-gone", sleep=gevent.sleep)
    run = gevent.spawn(loop.run)
    try:
        wait_until(lambda: _fired(client, OLD, "gone"), 20, "a fire time queued")
        state.forget("gone")
        client.redis.delete(client.broker.keys.status(OLD, "queued"))
        wait_until(lambda: _fired(client, OLD, "gone"), 20, "a fire time queued after the state was forgotten")
    finally:
        loop.stop()
        run.kill()
    assert client.redis.hget(client.broker.keys.schedules, "gone") == OLD
