"""Schedules as rules (runtime.schedule), no Redis: fire times, DST in two zones, the
missed-run policies, definitions refused with one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runtime.errors import ConfigError, InvalidParams
from runtime.schedule import MAX_COUNTED, MAX_EVERY_S, MAX_FIRES, make_schedule, periodic
from runtime.unique import FIRE_ID, RUN_NOW_ID, check_id


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: str = "UTC") -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def local(t_ms: int, tz: str) -> str:
    return datetime.fromtimestamp(t_ms / 1000, ZoneInfo(tz)).strftime("%m-%d %H:%M %Z")


# (zone, spring-forward day, fall-back day): 02:30 is missing on the first, twice on the second
ZONES = [("Europe/Paris", (2026, 3, 29), (2026, 10, 25)), ("America/New_York", (2026, 3, 8), (2026, 11, 1))]


@pytest.mark.parametrize(("tz", "spring", "fall"), ZONES)
def test_a_0230_job_runs_once_on_both_dst_days(tz, spring, fall):
    s = make_schedule("nightly", "m.f", cron="30 2 * * *", tz=tz)
    for day in (spring, fall):
        start = ms(*day, tz=tz) - 86_400_000  # the day before, midnight
        fires = s.due(start, start + 3 * 86_400_000)
        assert len(fires) == 3, [local(t, tz) for t in fires]  # one per day, the DST day included
        on_day = [t for t in fires if local(t, tz).startswith(f"{day[1]:02d}-{day[2]:02d}")]
        assert len(on_day) == 1
        expected = "03:30" if day == spring else "02:30"  # the gap: shifted forward; the repeat: its first
        assert local(on_day[0], tz)[6:11] == expected
    # the next_after walk agrees with due
    t, walked = ms(*spring, tz=tz) - 86_400_000, []
    for _ in range(3):
        t = s.next_after(t)
        walked.append(t)
    assert walked == s.due(ms(*spring, tz=tz) - 86_400_000, walked[-1])


def test_the_repeated_hour_does_not_fire_a_wall_clock_cron_twice():
    s = make_schedule("q", "m.f", cron="*/30 * * * *", tz="Europe/Paris")
    fires = s.due(ms(2026, 10, 24, 23, 0), ms(2026, 10, 25, 3, 0))  # UTC window around the change
    assert len(fires) == len(set(fires))
    assert [local(t, "Europe/Paris") for t in fires] == [
        "10-25 01:30 CEST", "10-25 02:00 CEST", "10-25 02:30 CEST", "10-25 03:00 CET", "10-25 03:30 CET",
        "10-25 04:00 CET"]


def test_every_fires_on_multiples_of_its_period_since_the_epoch():
    s = make_schedule("e", "m.f", every=timedelta(seconds=30))
    assert s.next_after(ms(2026, 1, 1, 0, 0) + 1) == ms(2026, 1, 1, 0, 0) + 30_000
    assert s.due(ms(2026, 1, 1), ms(2026, 1, 1) + 95_000) == [ms(2026, 1, 1) + k * 30_000 for k in (1, 2, 3)]
    assert len(s.due(0, ms(2026, 1, 1))) == 100  # the newest 100 at most
    assert s.job_id(ms(2026, 12, 6, 5, 0)) == "e@2026-12-06T05:00:00.000Z"
    assert make_schedule("f", "m.f", every=0.25).job_id(ms(2026, 12, 6, 5, 0) + 250) == "f@2026-12-06T05:00:00.250Z"


def test_fire_ids_have_a_fixed_width_time_part_and_sort_by_time():
    s = make_schedule("q", "m.f", every=0.25)
    times = [ms(2026, 12, 6, 5, 0) + k * 250 for k in range(12)] + [ms(2026, 12, 6, 5, 0) + 10_000]
    ids = [s.job_id(t) for t in times]
    assert sorted(ids) == ids and len({len(i) for i in ids}) == 1 and len(set(ids)) == len(ids)
    assert all(FIRE_ID.fullmatch(i) for i in ids)
    with pytest.raises(InvalidParams, match="form of a schedule's job id"):
        check_id(ids[0])


@pytest.mark.parametrize(("missed", "runs"), [("skip", []), ("once", [600]), (2, [540, 600])])
def test_missed_run_policies_after_downtime(missed, runs):
    """Fires every minute; the scheduler was down 10 minutes; grace 30 s, so every fire
    time is missed at t=10m45s (none on time)."""
    s = make_schedule("m", "m.f", every=60, missed=missed, grace_s=30)
    base = ms(2026, 1, 1)
    plan = s.plan(base, base + 645_000)
    assert [t for t, _ in plan.fires] == [base + k * 60_000 for k in range(1, 11)] and plan.dropped == 0
    assert [(t - base) // 1000 for t, run in plan.fires if run] == runs


@pytest.mark.parametrize(("missed", "runs"), [("skip", []), ("once", [600]), (2, [540, 600])])
def test_fire_times_before_the_scheduler_s_tick_window_are_missed_even_within_grace(missed, runs):
    """Grace 30 s, but the scheduler started (its window opened) at 10:05, after the 10:00
    fire time: that one passed while no scheduler ran."""
    s = make_schedule("m", "m.f", every=60, missed=missed, grace_s=30)
    base = ms(2026, 1, 1)
    plan = s.plan(base, base + 606_000, since_ms=base + 605_000)
    assert [(t - base) // 1000 for t, run in plan.fires if run] == runs
    assert [run for _, run in s.plan(base, base + 606_000, since_ms=base + 599_999).fires][-1]  # in its window


def test_a_fire_time_on_time_runs_under_every_policy_and_once_adds_nothing_to_it():
    base = ms(2026, 1, 1)
    for missed in ("skip", "once", 3):
        s = make_schedule("m", "m.f", every=60, missed=missed, grace_s=30)
        plan = s.plan(base, base + 600_000 + 10_000)  # 10:00 is 10 s late: on time
        ran = [(t - base) // 1000 for t, run in plan.fires if run]
        assert ran[-1] == 600 and len(ran) == {"skip": 1, "once": 1, 3: 4}[missed]


@pytest.mark.parametrize(("options", "message"), [
    ({"cron": "* * *"}, "bad cron"),
    ({"cron": "61 * * * *"}, "bad cron"),
    ({"cron": "0 0 31 2 *"}, "never fires"),
    ({"every": 0.01}, "every must be at least"),
    ({"every": 1e12}, r"at most 315360000 \(10 years\), got 1000000000000.0"),
    ({"every": timedelta(days=3651)}, "at most 315360000"),
    ({"every": float("nan")}, "every must be at least"),
    ({}, "give cron= or every="),
    ({"cron": "* * * * *", "every": 5}, "give cron= or every="),
    ({"cron": "0 * * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"every": True}, "every must be a number of seconds"),
    ({"every": "30"}, "every must be a number of seconds"),
    ({"every": 5, "tz": "Europe/Paris"}, "tz has no meaning with every"),
    ({"every": 5, "tz": "UTC"}, "tz has no meaning with every"),
    ({"every": 5, "missed": "later"}, "missed must be"),
    ({"every": 5, "overlap": "queue"}, "overlap must be"),
    ({"every": 5, "grace_s": 0}, "grace_s must be"),
    ({"every": 5, "priority": 500}, "priority must be"),
])
def test_bad_definitions_are_refused_with_one_line(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_schedule("s", "m.f", **options)
    assert "\n" not in str(info.value) and "'s'" in str(info.value)


def test_periodic_marks_a_task_and_checks_at_import():
    @periodic(every=60, name="a")
    @periodic(cron="0 * * * *", tz="Europe/Paris", name="b", params={"x": 1})
    def job(x: int = 0) -> None: ...

    assert [n for n, _ in job.__runtime_schedules__] == ["b", "a"]
    assert "__runtime_options__" in job.__dict__
    with pytest.raises(ConfigError, match="bad cron"):
        periodic(cron="nope")(lambda: None)


def test_a_schedule_with_a_fixed_utc_time_is_unaffected_by_dst():
    s = make_schedule("u", "m.f", cron="30 2 * * *")
    fires = s.due(ms(2026, 3, 28), ms(2026, 3, 31))
    assert [datetime.fromtimestamp(t / 1000, UTC).strftime("%d %H:%M") for t in fires] == [
        "28 02:30", "29 02:30", "30 02:30"]


def test_the_longest_every_is_ten_years():
    s = make_schedule("decade", "m.f", every=timedelta(days=3650))
    assert s.every_s == MAX_EVERY_S
    assert s.job_id(s.next_after(ms(2026, 1, 1))).startswith("decade@20")


def test_a_schedule_name_may_not_hold_an_at_sign():
    with pytest.raises(ConfigError, match=r"schedule 'a@b': a schedule name may not hold '@'"):
        make_schedule("a@b", "m.f", every=5)


@pytest.mark.parametrize("job_id", ["tick@now-1764000000000", "default:tick@now-1", "a.b@now-0"])
def test_a_caller_may_not_choose_a_run_now_id(job_id):
    assert RUN_NOW_ID.fullmatch(job_id)
    with pytest.raises(InvalidParams, match="NAME@now-MS of a run-now"):
        check_id(job_id)
    assert check_id(job_id, own=True) == job_id
    for fine in ("tick@now", "tick@now-1x", "tick@later-1", "tick@2026"):
        assert check_id(fine) == fine


def test_fire_times_beyond_the_newest_100_are_counted_as_dropped():
    """every=0.2 s over 50 s: 250 fire times, the newest 100 planned, 150 dropped."""
    s = make_schedule("e", "m.f", every=0.2, missed="skip", grace_s=60)
    base = ms(2026, 1, 1)
    plan = s.plan(base, base + 50_000, since_ms=base)
    assert len(plan.fires) == MAX_FIRES and plan.dropped == 150 and plan.after_ms == base
    assert plan.fires[0][0] == base + 150 * 200 + 200 and all(run for _, run in plan.fires)  # on time
    assert s.plan(base, base + 20_000).dropped == 0 and s.plan(base + 1, base + 20_199).dropped == 0


@pytest.mark.parametrize(("tz", "start", "days", "expected"), [
    ("UTC", (2026, 3, 27), 3, 3 * 1440),
    ("Europe/Paris", (2026, 3, 27), 3, 3 * 1440),  # spring forward: the gap's minutes fire at 03:xx, once each
    ("Europe/Paris", (2026, 10, 23), 3, 3 * 1440 - 60),  # fall back: the repeated hour fires once
    ("UTC", (2026, 3, 20), 400, 400 * 1440),  # past MAX_COUNTED: by the spacing, exact for a minute cron
])
def test_a_cron_counts_its_dropped_fire_times_exactly_then_by_their_spacing(tz, start, days, expected):
    s = make_schedule("c", "m.f", cron="* * * * *", tz=tz)
    base = ms(*start)
    times, dropped = s.due_counted(base, base + days * 86_400_000)
    assert times == [base + days * 86_400_000 - k * 60_000 for k in range(MAX_FIRES - 1, -1, -1)]
    assert dropped == expected - MAX_FIRES


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris"])
def test_past_max_counted_an_irregular_cron_s_dropped_fire_times_are_estimated_closely(tz):
    """Weekdays 09:00-17:56 every 7 minutes, 400 days (past MAX_COUNTED, across DST
    changes): the estimate is within 2 % of the count (the span it was measured on
    starts and ends on a weekday, a little denser than the average)."""
    s = make_schedule("w", "m.f", cron="*/7 9-17 * * 1-5", tz=tz)
    base, days = ms(2026, 3, 20), 400
    assert days * 5 / 7 * 9 * 9 > MAX_FIRES + MAX_COUNTED
    exact = sum(9 * 9 for d in range(days) if datetime.fromtimestamp(base / 1000 + d * 86_400, ZoneInfo(tz)).weekday() < 5)
    got = s.due_counted(base, base + days * 86_400_000)[1] + MAX_FIRES
    assert abs(got - exact) <= exact / 50, (got, exact)
