"""Concurrency caps and rate limits across workers (runtime.caps, claim.lua): never over
the cap (from the job records), per key from params, a capped job waits without blocking
others and without an attempt charged, a dead worker's slots come back."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import cli, wait_until

from runtime.errors import TaskOptionError
from runtime.process import host_pid
from runtime.status import Status
from runtime.tasks import task

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)

CAPPED = """
    import time
    from runtime import task

    @task(max_concurrency=2)
    def two(n: int = 0, sleep_s: float = 0.1) -> int:
        time.sleep(sleep_s)
        return n

    @task(max_concurrency=1, concurrency_key="customer")
    def per_customer(customer: str, sleep_s: float = 0.1) -> str:
        time.sleep(sleep_s)
        return customer

    @task(rate_limit=(5, 1.0))
    def limited(n: int = 0) -> int:
        return n

    @task
    def free(n: int = 0) -> int:
        return n
    """


def most_at_once(jobs) -> int:
    """The most of ``jobs`` that ran at the same time (from started_at / ended_at)."""
    edges = sorted([(j.started_at, 1) for j in jobs] + [(j.ended_at, -1) for j in jobs])
    now = top = 0
    for _, step in edges:
        now += step
        top = max(top, now)
    return top


@pytest.fixture
def capped(task_dir) -> str:
    task_dir.write("capmod.py", CAPPED)
    return "testtasks,capmod"


def test_a_cap_of_two_across_three_workers_with_30_jobs(client, worker, capped):
    ids = client.queue_jobs("capmod.two", [{"n": n} for n in range(30)])
    for _ in range(3):
        worker.start(task_modules=capped, greenlets="5")
    jobs = client.wait(ids, timeout_s=60)
    assert all(j.status == Status.SUCCESS and j.attempt == 1 for j in jobs)
    assert most_at_once(jobs) == 2
    assert len({j.worker for j in jobs}) >= 2  # spread over the workers, not one doing all


def test_a_cap_per_key_from_params(client, worker, capped):
    ids = client.queue_jobs("capmod.per_customer", [{"customer": c} for c in "ABABAB"])
    worker.start(task_modules=capped, greenlets="10")
    jobs = client.wait(ids, timeout_s=30)
    assert all(j.status == Status.SUCCESS for j in jobs)
    for c in "AB":
        assert most_at_once([j for j in jobs if j.params["customer"] == c]) == 1
    assert most_at_once(jobs) == 2  # one A and one B at once


def test_a_rate_limit_across_workers(client, worker, capped):
    ids = client.queue_jobs("capmod.limited", [{"n": n} for n in range(12)])
    worker.start(task_modules=capped)
    worker.start(task_modules=capped)
    jobs = client.wait(ids, timeout_s=30)
    starts = sorted(j.started_at for j in jobs)
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 0.99, starts  # never 6 started within a second
    assert starts[-1] - starts[0] >= 1.9


def test_a_job_over_its_cap_waits_without_blocking_others_or_being_charged(client, worker, capped):
    slow = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 0.4} for n in range(6)])
    quick = client.queue_jobs("capmod.free", [{"n": n} for n in range(5)])  # queued behind the capped ones
    worker.start(task_modules=capped, greenlets="10")
    done = client.wait(quick, timeout_s=10)
    assert all(j.status == Status.SUCCESS for j in done)
    first_slow_end = min(j.ended_at for j in client.wait(slow, timeout_s=30))
    assert max(j.ended_at for j in done) < first_slow_end + 0.2  # not behind the capped ones' turns
    for j in client.wait(slow, timeout_s=30):
        assert j.status == Status.SUCCESS and j.attempt == 1 and j.retries == 0
        assert [h["status"] for h in j.history].count("claimed") == 1  # parked, never claimed and put back
    assert client.redis.scard(client.broker.keys.parked("default")) == 0


def test_a_dead_workers_slots_come_back(client, workers, capped, settings):
    """Two worker processes, cap 2, jobs of 1.5 s: one is SIGKILLed while holding the
    slots; the reaper requeues its jobs, the slots are released, all jobs end, and never
    more than 2 ran at once."""
    procs = [workers.ready(workers.start("--tasks", capped, "--greenlets", "4")) for _ in range(2)]
    ids = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 1.5} for n in range(6)])
    wait_until(lambda: client.redis.scard(client.broker.keys.cap("default", "capmod.two")) == 2, 10, "two slots taken")
    holders = {client.get_job(i).worker for i in client.redis.smembers(client.broker.keys.cap("default", "capmod.two"))}
    victim = next(p for p in procs if any(host_pid(h)[1] == p.pid for h in holders))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    jobs = client.wait(ids, timeout_s=60)
    assert all(j.status == Status.SUCCESS for j in jobs), [(j.id, j.status) for j in jobs]
    assert sum(j.lost for j in jobs) >= 1  # the killed worker's jobs were taken back and run again
    assert most_at_once(jobs) <= 2


def test_a_cap_of_two_across_three_worker_processes_holds_and_recovers_after_a_sigkill(client, workers, capped):
    """The issue's case: cap 2, three worker processes, 30 jobs. One process holding a slot
    is SIGKILLed: every job still ends once in success, never more than 2 ran at once
    (from the job records), and after the kill the cap runs 2 at once again (the dead
    process's slot came back, not leaked), leaving no slot held and nothing parked."""
    procs = [workers.ready(workers.start("--tasks", capped, "--greenlets", "4")) for _ in range(3)]
    ids = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 0.3} for n in range(30)])
    cap = client.broker.keys.cap("default", "capmod.two")
    wait_until(lambda: client.redis.scard(cap) == 2, 10, "two slots taken")
    holders = {client.get_job(i).worker for i in client.redis.smembers(cap)}
    victim = next(p for p in procs if any(host_pid(h)[1] == p.pid for h in holders))
    victim_id = next(h for h in holders if host_pid(h)[1] == victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = client.redis.time()
    killed_at_s = killed_at[0] + killed_at[1] / 1e6
    victim.wait(10)
    jobs = client.wait(ids, timeout_s=90)
    assert all(j.status == Status.SUCCESS for j in jobs), [(j.id, j.status) for j in jobs]
    assert sum(j.lost for j in jobs) >= 1  # the killed process's job was taken back and run again
    others = [j for j in jobs if victim_id not in {h.get("worker") for h in j.history}]
    assert others and all(j.attempt == 1 and j.lost == 0 for j in others)  # waiting at the cap charged nothing
    assert most_at_once(jobs) <= 2
    assert most_at_once([j for j in jobs if j.started_at > killed_at_s]) == 2  # both slots in use again
    assert client.redis.scard(cap) == 0 and client.redis.zcard(client.broker.keys.park("default", "capmod.two")) == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
    ({"max_concurrency": True}, "max_concurrency must be an int >= 1"),
    ({"concurrency_key": "a b"}, "concurrency_key must be a param name"),
    ({"rate_limit": 5}, "rate_limit must be"),
    ({"rate_limit": (5, 0)}, "rate_limit must be"),
])
def test_bad_cap_options_fail_at_import(options, message):
    with pytest.raises(TaskOptionError, match=message):
        task(**options)(lambda: None)


def test_a_concurrency_key_that_caps_nothing_or_names_no_param_fails_at_import():
    def sync(customer: str) -> None:
        pass

    with pytest.raises(TaskOptionError, match="concurrency_key 'customer' needs max_concurrency or rate_limit"):
        task(concurrency_key="customer")(sync)
    with pytest.raises(TaskOptionError, match=r"concurrency_key 'custmer' names no param of the task "
                                              r"\(its params: customer\)"):
        task(max_concurrency=1, concurrency_key="custmer")(sync)
    with pytest.raises(TaskOptionError, match="under 1e9"):  # the message names the bound it enforces
        task(rate_limit=(10**9, 10**9))(sync)
    task(rate_limit=(5, 1), concurrency_key="customer")(sync)  # a rate per customer: fine
    task(max_concurrency=1, concurrency_key="anything")(lambda **params: None)  # takes any param


def test_caps_are_shown_in_runtime_queues_and_exported_as_metrics(client, worker, capped, settings):
    import socket
    import urllib.request

    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ids = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 1.0} for n in range(5)])
    worker.start(task_modules=capped, greenlets="10", metrics_port=port)
    wait_until(lambda: client.redis.zcard(client.broker.keys.park("default", "capmod.two")) == 3, 10, "three parked")
    caps = json.loads(cli(settings, "queues", "--json").stdout)["caps"]
    assert caps == {"capmod.two": {"running": 2, "parked": 3, "recent_starts": 0}}
    row = next(x for x in cli(settings, "queues").stdout.splitlines() if x.startswith("capmod.two "))
    assert row.split()[:3] == ["capmod.two", "2", "3"], row
    # runtime workers: the caps each worker enforces, and the jobs of each it holds
    # runtime workers: the caps each worker enforces, with the jobs of each it holds
    assert "caps capmod.limited (rate 5/1s, 0 held); capmod.per_customer (max 1 per customer, 0 held); " \
           "capmod.two (max 2, " in cli(settings, "workers").stdout
    entry = json.loads(cli(settings, "workers", "--json").stdout)[0]
    assert entry["caps"]["capmod.limited"] == {"max_concurrency": None, "concurrency_key": None,
                                               "rate_limit": [5, 1.0]}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    lines = [x for x in text.splitlines() if x.startswith("runtime_cap_jobs{")]
    assert any('runtime_cap_state="parked"' in x and x.endswith(" 3.0") for x in lines), lines
    assert any('runtime_cap_state="running"' in x and x.endswith(" 2.0") for x in lines), lines
    latency = [x for x in text.splitlines() if x.startswith("runtime_queue_latency_seconds{")]
    assert latency and 'messaging_destination_name="default"' in latency[0]  # the autoscaling signal
    client.wait(ids, timeout_s=30)


def test_a_burst_worker_waits_for_parked_jobs_and_a_cancelled_parked_job_is_dropped(client, worker, capped):
    ids = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 0.2} for n in range(6)])
    w = worker.start(task_modules=capped, greenlets="10")
    wait_until(lambda: client.redis.zcard(client.broker.keys.park("default", "capmod.two")) == 4, 10, "four parked")
    parked = client.redis.zrange(client.broker.keys.park("default", "capmod.two"), 0, -1)
    client.cancel(parked[-1])
    worker.stop(w)
    worker.burst(task_modules=capped, greenlets="10")  # returns only once nothing is left to run
    jobs = {j.id: j for j in (client.get_job(i) for i in ids)}
    assert jobs[parked[-1]].status == Status.CANCEL
    assert all(j.status == Status.SUCCESS and j.attempt <= 2 for i, j in jobs.items() if i != parked[-1])
    assert client.redis.zcard(client.broker.keys.park("default", "capmod.two")) == 0


def test_parked_jobs_are_shown_requeued_and_unparked_once_the_cap_is_removed(settings, client, workers, task_dir):
    """Jobs parked by a cap say so in `runtime job`; `runtime requeue` puts one back in
    its queue; a worker of code without the cap puts the rest back and runs them."""
    from helpers import cli
    mod = """
        import time
        from runtime import task

        @task({cap})
        def slow(sleep_s: float = 0.0) -> float:
            time.sleep(sleep_s)
            return sleep_s
        """
    task_dir.write("capgone.py", mod.format(cap="max_concurrency=1"))
    a = workers.start("--tasks", "testtasks,capgone")
    ids = client.queue_jobs("capgone.slow", [{"sleep_s": 1.0}] * 3)
    park = client.broker.keys.park("default", "capgone.slow")
    wait_until(lambda: client.redis.zcard(park) == 2, 20, "two jobs parked")
    a.terminate()  # graceful: the running job ends; the parked ones stay parked
    a.wait(30)
    parked = sorted(client.redis.zrange(park, 0, -1))
    shown = cli(settings, "job", parked[0])
    assert "parked (cap capgone.slow)" in shown.stdout, shown.stdout
    again = cli(settings, "requeue", parked[0])
    assert again.exit_code == 0 and "requeued 1 job" in again.stdout, (again.stdout, again.stderr)
    assert client.redis.zscore(client.broker.keys.ready("default"), parked[0]) is not None
    assert "parked" not in cli(settings, "job", parked[0]).stdout.split("status", 1)[1].splitlines()[0]
    task_dir.write("capgone.py", mod.format(cap="timeout_s=60"))  # the cap removed from the code
    workers.start("--tasks", "testtasks,capgone")
    jobs = client.wait(ids, timeout_s=30)
    assert all(j.status == Status.SUCCESS and j.attempt == 1 for j in jobs), [(j.id, j.status) for j in jobs]
    assert client.redis.zcard(park) == 0


def test_runtime_queues_cuts_long_cap_and_queue_names_with_an_ellipsis(client, settings):
    """A cap per key value (``path=value``) with a long value, and a long queue name: the
    table keeps its columns; --json has the names whole."""
    name = "capmod.per_customer=" + "customer-" * 12
    queue = "q" * 60
    client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue=queue)
    client.redis.sadd(client.broker.keys.caps(queue), name)
    client.redis.sadd(client.broker.keys.cap(queue, name), "j1")
    lines = cli(settings, "queues").stdout.splitlines()
    header = next(x for x in lines if x.startswith("CAP "))
    row = next(x for x in lines if x.startswith("capmod.per_customer="))
    assert len(row) == len(header) and row.split()[0].endswith("\u2026") and row.split()[1:] == ["1", "0", "0"], row
    assert len(row.split()[0]) == 40 and name.startswith(row.split()[0][:-1])
    qrow = next(x for x in lines if x.startswith("qqq"))
    assert qrow.split() == ["q" * 19 + "\u2026", "1", "0"], qrow
    data = json.loads(cli(settings, "queues", "--json").stdout)
    assert name in data["caps"] and queue in data["queues"]


def test_a_cancelled_parked_job_leaves_its_park_set_at_once(client, worker, capped, settings):
    """`runtime queues` (and the cap metric, from the same counts) count only parked jobs
    still waiting: a cancel takes the job out of its cap's park set, keyed caps included."""
    two = client.queue_jobs("capmod.two", [{"n": n, "sleep_s": 1.0} for n in range(4)])
    keyed = client.queue_jobs("capmod.per_customer", [{"customer": "c7", "sleep_s": 1.0}] * 2)
    worker.start(task_modules=capped, greenlets="10")
    park, park_c7 = client.broker.keys.park("default", "capmod.two"), client.broker.keys.park("default", "capmod.per_customer=c7")
    wait_until(lambda: client.redis.zcard(park) == 2 and client.redis.zcard(park_c7) == 1, 10, "three parked")
    parked = client.redis.zrange(park, 0, -1) + client.redis.zrange(park_c7, 0, -1)
    assert client.cancel(parked[0]) == [parked[0]]
    caps = json.loads(cli(settings, "queues", "--json").stdout)["caps"]
    assert caps["capmod.two"]["parked"] == 1 and caps["capmod.per_customer=c7"]["parked"] == 1
    client.cancel(parked[1], parked[2])
    caps = json.loads(cli(settings, "queues", "--json").stdout)["caps"]
    assert caps["capmod.two"]["parked"] == 0 and caps["capmod.per_customer=c7"]["parked"] == 0
    assert client.redis.smembers(client.broker.keys.parked("default")) == set()
    done = client.wait([i for i in two + keyed if i not in parked], timeout_s=20)
    assert all(j.status == Status.SUCCESS for j in done)
    assert all(client.get_job(i).status == Status.CANCEL for i in parked)
