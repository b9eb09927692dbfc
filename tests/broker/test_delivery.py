"""Priorities, delays, batching, wake-ups, handoffs and lost replies."""

from __future__ import annotations

import time

import pytest
import redis
from helpers import wait_until

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_higher_priority_runs_first_then_fifo(client, worker):
    low = [client.queue_job("testtasks.add", {"a": i, "b": 0}, priority=-5) for i in range(3)]
    normal = [client.queue_job("testtasks.add", {"a": i, "b": 0}) for i in range(3)]
    high = [client.queue_job("testtasks.add", {"a": i, "b": 0}, priority=10) for i in range(3)]
    worker.burst(greenlets=1)
    jobs = client.store.get_many(low + normal + high)
    order = [j.id for j in sorted(jobs, key=lambda j: j.started_at)]
    assert order == high + normal + low


def test_queues_listed_first_are_served_first(client, worker):
    default = [client.queue_job("testtasks.add", {"a": 1, "b": 0}) for _ in range(3)]
    urgent = [client.queue_job("testtasks.add", {"a": 1, "b": 0}, queue="high") for _ in range(3)]
    worker.burst(greenlets=1, queues="high,default")
    jobs = client.store.get_many(default + urgent)
    assert [j.id for j in sorted(jobs, key=lambda j: j.started_at)] == urgent + default


def test_delayed_jobs_never_run_early(client, worker):
    worker.start()
    t0 = time.time()
    ids = [client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=d) for d in (0.3, 0.1, 0.6)]
    now = client.queue_job("testtasks.add", {"a": 0, "b": 0})
    jobs = client.wait(ids + [now], timeout_s=10)
    for job, delay in zip(jobs, (0.3, 0.1, 0.6)):
        assert job.started_at >= job.queued_at + delay
    assert jobs[3].started_at < jobs[1].started_at
    assert time.time() - t0 >= 0.6


@pytest.mark.timing
def test_delayed_jobs_are_not_much_late(client, worker):
    worker.start()
    ids = [client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=d) for d in (0.5, 0.2, 1.0)]
    for job, delay in zip(client.wait(ids, timeout_s=10), (0.5, 0.2, 1.0)):
        assert job.started_at - (job.queued_at + delay) < 0.5


@pytest.mark.timing
def test_a_delayed_job_starts_on_time_when_nothing_else_comes(client, worker):
    """An idle worker blocks for up to a second between looks: the delayed job's wake-up
    token makes it look at once, learn when the job is due, and start it then."""
    worker.start()
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)  # now blocked, idle
    for delay in (0.3, 0.1):
        job = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=delay), timeout_s=10)
        late = job.started_at - (job.queued_at + delay)
        assert 0 <= late < 0.3, late  # Redis checks blocking timeouts 10 times a second (hz 10)


@pytest.mark.timing
def test_a_job_handed_to_an_idle_worker_does_not_make_a_delayed_one_late(client, worker):
    worker.start()
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)  # now blocked, idle
    delayed = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=0.5)
    time.sleep(0.35)  # the worker now waits for it to be due; a job handed meanwhile must not reset that
    client.wait(client.queue_job("testtasks.add", {"a": 2, "b": 2}), timeout_s=10)
    job = client.wait(delayed, timeout_s=10)
    late = job.started_at - (job.queued_at + 0.5)
    assert 0 <= late < 0.3, late  # Redis checks blocking timeouts 10 times a second (hz 10)


def test_a_job_is_never_handed_to_an_idle_worker_ahead_of_waiting_ones(client):
    """A worker registered idle while jobs wait (say, by a flush that raced their enqueue)
    is woken to claim them in order; a new job does not jump the queue by a handoff."""
    keys = client.broker.keys
    first = client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(2)])
    client.redis.hset(keys.worker("w1"), "queues", "default")  # a live worker, registered idle
    client.redis.zadd(keys.idle("default"), {"w1": 1})
    last = client.queue_job("testtasks.add", {"a": 9, "b": 0})
    assert client.redis.llen(keys.handoff("w1", "default")) == 0
    assert client.redis.zrange(keys.ready("default"), 0, -1) == first + [last]
    assert client.get_job(last).status == "queued"


def test_an_enqueue_sent_again_after_a_lost_reply_queues_the_job_once(client):
    """The client sends an enqueue again when its connection broke before the reply: the
    first send may have queued the job (ids are made by the client, so they match)."""
    job = client._new("testtasks.add", {"a": 1, "b": 2}, "default", 0, None, None)
    client.broker.enqueue([job])
    client.broker.enqueue([job])
    assert client.redis.zrange(client.broker.keys.ready("default"), 0, -1) == [job.id]
    assert [h["status"] for h in client.get_job(job.id).history] == ["queued"]


def test_a_claim_whose_reply_was_lost_is_taken_back_while_its_worker_lives(client, worker, settings):
    """A claim made for a live worker that never got the reply (its connection broke)
    is not extended by that worker's heartbeat: once it expires, the job is requeued."""
    import dataclasses

    from runtime.client import Client
    w = worker.start(queues="default")
    wid = w.id
    job_id = client.queue_job("testtasks.add", {"a": 2, "b": 3}, queue="other")  # not the worker's queue
    short = Client(dataclasses.replace(settings, visibility_timeout_s=0.5))
    _, _, claimed = short.broker.claim(wid, 1, ["other"])  # as if its reply never reached the worker
    assert [c.id for c in claimed] == [job_id]
    job = wait_until(lambda: (j := client.get_job(job_id)).status == "interrupt" and j, 10, "the job requeued")
    assert "does not hold it" in job.history[-1]["note"] and job.lost == 0
    assert client.redis.zrange(client.broker.keys.ready("other"), 0, -1) == [job_id]
    assert worker.alive(w)


def test_jobs_queued_in_one_call_run_in_their_order(client, worker):
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(40)])
    worker.start(greenlets=1)
    jobs = client.wait(ids, timeout_s=20)
    assert sorted(ids, key=lambda i: jobs[ids.index(i)].started_at) == ids


def _script_calls(client) -> int:
    """EVALSHA calls Redis served so far (summed over a cluster's nodes)."""
    r = client.redis
    nodes = r.info("commandstats", target_nodes=r.ALL_NODES).values() if isinstance(r, redis.RedisCluster) else [
        r.info("commandstats")]
    return sum(int(n.get("cmdstat_evalsha", {}).get("calls", 0)) for n in nodes)


def test_an_idle_worker_does_not_poll(client, worker, settings):
    worker.start()
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)  # warm
    before = _script_calls(client)
    time.sleep(0.5)  # idle: the worker blocks on BLPOP, with at most one wake-up per second
    idle_calls = _script_calls(client) - before
    assert idle_calls < 8  # reaps every 0.2 s + a claim after a BLPOP timeout: no busy polling


@pytest.mark.timing
def test_idle_worker_starts_a_job_quickly(client, worker):
    worker.start()
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)  # warm
    lat = []
    for _ in range(20):
        job = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=5)
        lat.append(job.started_at - job.queued_at)
    assert sorted(lat)[10] < 0.05


def test_many_jobs_with_many_greenlets_all_end_once(client, worker):
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.01}] * 500)
    worker.start(greenlets=50)
    worker.start(greenlets=50)
    jobs = client.wait(ids, timeout_s=60)
    assert all(j.status == "success" and j.attempt == 1 for j in jobs)
    assert client.store.counts()["success"] == 500
