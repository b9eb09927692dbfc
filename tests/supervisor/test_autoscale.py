"""Autoscaling (``runtime worker --processes MIN:MAX``): the rules with a fake clock, the
queue-latency signal, and a supervisor that scales up on a burst and back down by
graceful drain, with every decision in ``runtime events``."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
from helpers import cli, wait_until

from runtime.errors import ConfigError
from runtime.status import Status
from runtime.supervisor.autoscale import AutoscalePolicy, Autoscaler, parse_processes, queue_latency

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_rules_scale_up_within_the_warmup_and_down_after_the_cooldown():
    clock = Clock()
    a = Autoscaler(AutoscalePolicy(1, 8, target_s=5, warmup_s=10, cooldown_s=60), clock=clock)
    assert a.decide(1, 2.0)[:2] == (1, "")                      # under the target
    want, reason, detail = a.decide(1, 20.0)                    # 4x the target: 4 processes at once
    assert (want, reason) == (4, "up") and "oldest due job 20.0 s > target 5 s" in detail
    clock.t += 5
    assert a.decide(4, 30.0)[:2] == (4, "")                     # warming up: no step
    clock.t += 5
    assert a.decide(4, 30.0)[:2] == (8, "up")                   # ceil(4 * 30 / 5) = 24, capped at MAX
    assert a.decide(8, 99.0)[:2] == (8, "")                     # at MAX
    for _ in range(60):  # the first calm reading starts the cool-down
        clock.t += 1
        assert a.decide(8, 0.0)[:2] == (8, "")                  # calm, cooling down
    clock.t += 1
    assert a.decide(8, 0.0)[:2] == (7, "down")                  # one fewer after the cool-down
    clock.t += 30
    assert a.decide(7, 0.0)[:2] == (7, "")                      # another cool-down before the next
    clock.t += 30
    assert a.decide(7, 0.0)[:2] == (6, "down")
    assert a.decide(1, 0.0)[:2] == (1, "")                      # never under MIN


def test_no_step_down_while_no_process_is_idle():
    clock = Clock()
    a = Autoscaler(AutoscalePolicy(1, 4, target_s=2, warmup_s=1, cooldown_s=5), clock=clock)
    a.decide(3, 0.0, idle=0)                                    # calm: the cool-down starts
    clock.t += 6
    assert a.decide(3, 0.0, idle=0)[:2] == (3, "")              # cooled down, but every process is busy
    clock.t += 1
    assert a.decide(3, 0.0, idle=1)[:2] == (2, "down")          # one idle: it drains now, not a cool-down later


def test_the_memory_budget_caps_a_step_up_once_with_an_event():
    a = Autoscaler(AutoscalePolicy(1, 8, target_s=1, warmup_s=0), mem_limit_bytes=512 << 20,
                   clock=Clock(), memory=lambda: 1100 << 20)
    assert a.decide(1, 10.0)[:2] == (3, "up")                   # 2 more fit in 1100 MiB at 512 MiB each
    a.memory = lambda: 100 << 20
    want, reason, detail = a.decide(3, 10.0)
    assert (want, reason) == (3, "memory") and "available memory 100 MiB" in detail
    assert a.decide(3, 10.0)[:2] == (3, "")                     # said once per refusal


@pytest.mark.parametrize(("text", "expected"), [("4", (4, None)), ("1:8", (1, (1, 8))), (None, (None, None))])
def test_processes_takes_n_or_min_max(text, expected):
    assert parse_processes(text) == expected


@pytest.mark.parametrize("text", ["x", "0:4", "4:2", "1:"])
def test_bad_processes_are_refused_with_one_line(text):
    with pytest.raises(ConfigError, match="--processes"):
        parse_processes(text)


def test_queue_latency_is_the_age_of_the_next_job(client):
    assert queue_latency(client.redis, client.broker.keys, ["default"]) == {"default": 0.0}
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, priority=5)
    client.redis.zadd(client.broker.keys.ready("default"), {"old": -5 * 1e13 + (time.time() - 3) * 1000})
    age = queue_latency(client.redis, client.broker.keys, ["default"])["default"]
    assert 2.5 < age < 5


def test_a_burst_scales_up_to_max_and_the_drained_queue_back_to_min(settings, client, workers):
    sup = workers.start("--processes", "1:3", "--greenlets", "2", "--autoscale-target", "0.5",
                        "--autoscale-warmup", "1", "--autoscale-cooldown", "1.5")
    wait_until(lambda: _running_children(client) == 1, 30, "one worker process")
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.3}] * 80)
    wait_until(lambda: _running_children(client) == 3, 30, "three worker processes")
    jobs = client.wait(ids, timeout_s=90)
    assert all(j.status == Status.SUCCESS for j in jobs)
    assert all("interrupt" not in [h["status"] for h in j.history] for j in jobs)  # none cut short by a drain
    assert all(j.attempt == 1 and j.lost == 0 for j in jobs)  # none lost with a process that left
    wait_until(lambda: _running_children(client) == 1, 30, "back to one process")
    events = json.loads(cli(settings, "events", "--json", "-n", "50").stdout)
    scale = sorted((e for e in events if e["event"] == "scale"), key=lambda e: e["at"])
    assert {e["reason"] for e in scale} == {"up", "down"} and all(e["detail"] for e in scale)
    steps = [tuple(int(n) for n in re.match(r"processes (\d+) -> (\d+)", e["detail"]).groups()) for e in scale]
    ups = [s for s, e in zip(steps, scale) if e["reason"] == "up"]
    assert ups[0][0] == 1 and ups[-1][1] == 3  # every step is an event: from MIN ...
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:]))  # ... one after the other ...
    assert steps[-2:] == [(3, 2), (2, 1)]  # ... and back to MIN one process at a time
    up_at = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in scale if e["reason"] == "up"]
    assert (up_at[-1] - up_at[0]).total_seconds() <= 1 + 2.0  # MAX within the warm-up (1 s) of the first step, a beat or two late
    assert "scale (down)" in cli(settings, "events").stdout
    assert sup.poll() is None


def _running_children(client) -> int:
    keys = client.broker.keys
    entries = [client.redis.hgetall(keys.worker(w)) for w in client.redis.smembers(keys.workers)]
    sup = [e for e in entries if e.get("kind") == "supervisor"]
    return len([c for c in json.loads(sup[0]["children"]) if not c["recycling"]]) if sup else 0


@pytest.mark.parametrize(("args", "said"), [
    (("--processes", "1:2", "--autoscale-target", "0"), "--autoscale-target must be more than 0 seconds, got 0"),
    (("--autoscale-target", "2"), "--autoscale-target needs --processes MIN:MAX"),
    (("--processes", "2", "--autoscale-cooldown", "5"), "--autoscale-cooldown needs --processes MIN:MAX"),
    (("--processes", "0"), "--processes must be at least 1"),
])
def test_autoscale_options_that_would_do_nothing_or_divide_by_zero_are_refused(cli_env, args, said):
    from helpers import rt
    r = rt(cli_env, "worker", "--burst", *args)
    assert r.returncode == 2 and said in r.stderr, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_scale_down_never_drains_a_busy_process(settings, client, workers):
    """Two processes each running a job far longer than --grace and nothing waiting: no
    step down until one is idle; the long jobs run once, never interrupted, and the
    scale event says what was drained (not a job take-back)."""
    workers.start("--processes", "1:2", "--greenlets", "1", "--prefetch", "0", "--grace", "0.5",
                  "--autoscale-target", "0.5", "--autoscale-warmup", "1", "--autoscale-cooldown", "1")
    wait_until(lambda: _running_children(client) == 1, 30, "one worker process")
    short = client.queue_jobs("testtasks.sleep", [{"seconds": 0.2}] * 15)
    long = client.queue_jobs("testtasks.sleep_untimed", [{"seconds": 6.0}] * 2, priority=-10)
    wait_until(lambda: _running_children(client) == 2, 30, "two worker processes")
    client.wait(short, timeout_s=60)
    jobs = client.wait(long, timeout_s=60)
    assert all(j.status == Status.SUCCESS and j.attempt == 1 for j in jobs), [(j.status, j.attempt) for j in jobs]
    assert all("interrupt" not in [h["status"] for h in j.history] for j in jobs)
    wait_until(lambda: _running_children(client) == 1, 30, "back to one process")
    events = json.loads(cli(settings, "events", "--json", "-n", "50").stdout)
    down = [e for e in events if e["event"] == "scale" and e["reason"] == "down"]
    assert down and "drains (it ran no job when chosen)" in down[0]["detail"], down
    text = cli(settings, "events").stdout
    assert "scale (down)" in text and "running jobs:" not in text, text
