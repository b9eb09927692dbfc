"""Schedules at their limits: fire times dropped past the cap of one step are counted as
missed (fake clock, real Redis), the listing shows a stored time it cannot format as it
is, and a schedule's job ids (fire times, run-now) are not a caller's to take."""

from __future__ import annotations

import json

import pytest
from helpers import cli
from test_scheduler import FakeClock, _jobs, _loop, _register

from runtime.cli.schedules import _when
from runtime.errors import InvalidParams
from runtime.schedule import MAX_FIRES, make_schedule
from runtime.scheduler.report import describe, run_now
from runtime.scheduler.state import ScheduleState

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)

START = 1_764_000_000.0  # a past instant: fire.lua queues no fire time ahead of the Redis clock


def _counts(client, name: str) -> dict[str, int]:
    h = client.redis.hgetall(client.broker.keys.schedule("default", name))
    return {k: int(h.get(f"count_{k}") or 0) for k in ("missed", "paused", "overlap")}


def test_fire_times_dropped_after_a_long_wedge_are_counted_as_missed(client):
    """every=0.2 s, missed='skip', grace 60 s, the only scheduler blocked 50 s: 250 fire
    times, all on time; the newest 100 are queued, the 150 older ones counted missed."""
    s = make_schedule("wedged", "testtasks.add", params={"a": 1, "b": 1}, every=0.2, missed="skip", grace_s=60)
    clock = FakeClock(START)
    loop = _loop(client, [s], clock, START)
    loop.step()
    clock.t = START + 50  # blocked 50 s
    loop.step()
    assert len(_jobs(client, "wedged@")) == MAX_FIRES
    assert _jobs(client, "wedged@")[0] == s.job_id(int((START + 30.2) * 1000))
    assert _counts(client, s.name) == {"missed": 150, "paused": 0, "overlap": 0}
    assert describe(loop.state)["schedules"][0]["missed"] == 150
    loop.step()  # nothing more: handled, and counted once
    assert len(_jobs(client, "wedged@")) == MAX_FIRES and _counts(client, s.name)["missed"] == 150


def test_fire_times_dropped_while_paused_are_counted_as_paused(client):
    s = make_schedule("held", "testtasks.add", params={"a": 1, "b": 1}, every=0.2, grace_s=60)
    clock = FakeClock(START)
    loop = _loop(client, [s], clock, START)
    loop.step()
    loop.state.pause(s.name)
    clock.t = START + 50
    loop.step()
    assert _jobs(client, "held@") == [] and _counts(client, s.name) == {"missed": 0, "paused": 250, "overlap": 0}


def test_a_plan_from_a_last_fire_another_scheduler_moved_is_made_again_not_miscounted(client):
    """This scheduler knows the last fire time START; another one fired up to START + 10
    since (it counted those). Its plan of 250 fire times drops 150 of which it cannot know
    how many are still to count: fire.lua answers 'stale', changes nothing, and the plan
    made again from START + 10 drops and counts 100."""
    s = make_schedule("shared", "testtasks.add", params={"a": 1, "b": 1}, every=0.2, missed="skip", grace_s=60)
    clock = FakeClock(START)
    loop = _loop(client, [s], clock, START)
    loop.step()
    client.redis.hset(client.broker.keys.schedule("default", s.name), "last_fire", int((START + 10) * 1000))
    clock.t = START + 50
    assert loop.step() == 0.0  # stale: planned again at once
    assert _jobs(client, "shared@") == [] and _counts(client, s.name)["missed"] == 0
    assert loop.last[s.name] == int((START + 10) * 1000)
    loop.step()
    assert len(_jobs(client, "shared@")) == MAX_FIRES  # on time, as planned the first time
    assert _counts(client, s.name)["missed"] == 200 - MAX_FIRES


def test_a_stored_fire_time_past_year_9999_or_not_a_number_is_listed_as_it_is(settings, client):
    """A definition stored before every was capped (every = 1e12 s: its next fire time in
    the year 33658) and last fire times no date can show: `runtime schedules` lists them,
    exit 0, the times as stored."""
    state = ScheduleState(client.broker)
    huge, text = (make_schedule(n, "testtasks.add", params={"a": 1, "b": 1}, every=60) for n in ("huge", "text"))
    _register(client, "w-limits")
    state.sync("w-limits", [huge, text], first=True)
    stored = json.loads(huge.to_json()) | {"every_s": 1e12}
    client.redis.hset(client.broker.keys.schedule("default", "huge"), mapping={
        "def": json.dumps(stored), "last_fire": "1000000000000000000", "last_status": "queued"})
    client.redis.hset(client.broker.keys.schedule("default", "text"), mapping={"last_fire": "soon", "last_status": "queued"})
    r = cli(settings, "schedules")
    assert r.exit_code == 0, r.stderr
    assert "last 1000000000000000000 (" in r.stdout and "last soon (-, queued)" in r.stdout, r.stdout
    rows = {row["name"]: row for row in json.loads(cli(settings, "schedules", "--json").stdout)["schedules"]}
    assert rows["huge"]["last_fire"] == "1000000000000000000" and rows["huge"]["next_fire"] is None
    assert rows["text"]["last_fire"] == "soon" and rows["text"]["status"] == "ok"


@pytest.mark.parametrize(("ts", "shown"), [(None, "-"), (0, "1970-01-01 00:00:00 UTC"), (1e15, "1000000000000000.0"),
                                           (-1e15, "-1000000000000000.0"), (float("nan"), "nan"), ("soon", "soon")])
def test_the_listing_shows_a_time_it_cannot_format_as_it_is(ts, shown):
    assert _when(ts) == shown


def test_a_caller_may_not_take_a_run_now_id_and_run_now_still_makes_one(client):
    for job_id in ("tick@now-123", "default:tick@now-1764000000000"):
        with pytest.raises(InvalidParams, match="form of a schedule's job id"):
            client.queue_job("testtasks.add", {"a": 1, "b": 2}, job_id=job_id)
        with pytest.raises(InvalidParams, match="form of a schedule's job id"):
            client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}], job_ids=[job_id])
    s = make_schedule("tick", "testtasks.add", params={"a": 1, "b": 2}, every=60)
    _register(client, "w-runnow")
    ScheduleState(client.broker).sync("w-runnow", [s], first=True)
    got = run_now(client, "tick")
    assert got.startswith("default:tick@now-") and client.get_job(got).params == {"a": 1, "b": 2}
