"""The watchdog outside each worker process (runtime.watch): a C call holding the GIL
stops the worker's heartbeat thread, not its watchdog; a job past its hard deadline is
stopped from outside."""

from __future__ import annotations

import time

import psutil
import pytest
from helpers import wait_until

from runtime import task
from runtime.errors import TaskOptionError
from runtime.process import host_pid

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_a_gil_holding_call_three_times_worker_ttl_never_runs_twice(client, workers, tmp_path):
    runs = tmp_path / "runs"
    # worker_ttl_s 1 and visibility 2 s in the tests: the call holds the GIL for 3.5 s
    job = client.queue_job("testtasks.hold_gil", {"seconds": 3.5, "path": str(runs)}, queue="gil")
    holder = workers.ready(workers.start("--queues", "gil", visibility_timeout_s=2, hostname="host-b"))
    wait_until(lambda: runs.exists(), 10, "the call to start")
    workers.ready(workers.start("--queues", "gil", visibility_timeout_s=2, hostname="host-a"))
    done = client.wait(job, timeout_s=20)
    assert done.status.value == "success" and done.lost == 0, done.history
    assert runs.read_text() == "x"  # ran once: nobody took it while the GIL was held
    assert host_pid(done.worker)[1] == holder.pid


def test_a_job_past_its_hard_deadline_ends_timeout_and_its_neighbours_come_back_uncharged(client, workers):
    neighbours = client.queue_jobs("testtasks.sleep", [{"seconds": 30}] * 2)  # claimed with it, started first
    stuck = client.queue_job("testtasks.hold_gil_past_timeout", {"seconds": 60})
    proc = workers.ready(workers.start("--greenlets", "4"))  # alone: its watchdog takes the jobs back
    wait_until(lambda: client.redis.hget(client.broker.keys.job(stuck), "began") == "1", 10, "the stuck job")
    began = time.monotonic()
    assert all(client.redis.hget(client.broker.keys.job(n), "began") == "1" for n in neighbours)
    job = client.wait(stuck, timeout_s=30)
    assert job.status.value == "timeout" and job.reason == "hard-timeout", job.history
    assert "watchdog" in job.exc_message and job.exc_type == "runtime.errors.HardTimeout"
    # timeout 1 s + grace 5 s: killed and taken back within a heartbeat or two of the deadline
    assert time.monotonic() - began < 1 + 5 + 3
    proc.wait(10)
    assert proc.returncode == -9
    wait_until(lambda: all(j.status.value != "started" for j in client.store.get_many(neighbours)), 10, "requeue")
    for n in client.store.get_many(neighbours):
        assert n.lost == 0 and n.status.value == "interrupt", n.history
    assert "killing worker process" in workers.log(proc)
    # the take-back records the event after it requeued the jobs
    lost = wait_until(lambda: [e for e in client.reader.events(10) if e["event"] == "kill"], 10, "the kill event")
    assert lost[0]["reason"] == "hard-timeout"
    # claimed before the kill: no reaper records a second event for it
    assert [e["event"] for e in client.reader.events(10) if e["worker"] == lost[0]["worker"]] == ["kill"]


def test_timeout_none_means_no_timeout_and_zero_is_refused(client, worker):
    untimed = client.queue_job("testtasks.sleep_untimed", {"seconds": 0.5})
    timed = client.queue_job("testtasks.sleep", {"seconds": 0.5})
    worker.burst(default_timeout_s=0.2)
    assert client.get_job(untimed).status.value == "success"
    assert client.get_job(timed).status.value == "timeout"
    for bad in (0, -1):
        with pytest.raises(TaskOptionError, match="timeout_s"):
            task(timeout_s=bad)(lambda: None)


def test_a_supervisor_is_its_children_s_watchdog(client, workers):
    stuck = client.queue_job("testtasks.hold_gil_past_timeout", {"seconds": 60})
    sup = workers.ready(workers.start("--processes", "1", "--greenlets", "4"))
    wait_until(lambda: client.get_job(stuck).status.value == "started", 15, "the stuck job to start")
    assert not [p for p in psutil.Process(sup.pid).children(recursive=True) if "watch.py" in " ".join(p.cmdline())]
    job = client.wait(stuck, timeout_s=30)
    assert job.status.value == "timeout" and job.reason == "hard-timeout", job.history
    wait_until(lambda: "killing it" in workers.log(sup), 10, "the supervisor to say so")
    # and it started a new worker process, which runs the next job
    assert client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=20).result == 3


def _watchdogs(pid: int) -> list[int]:
    """The live watchdog processes among ``pid``'s children (a killed one not yet reaped
    is a zombie, whose command line cannot be read)."""
    out = []
    for p in psutil.Process(pid).children():
        try:
            if "watch.py" in " ".join(p.cmdline()):
                out.append(p.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return out


def test_a_watchdog_that_dies_is_started_again_and_ends_with_its_worker(workers):
    proc = workers.ready(workers.start("--greenlets", "2"))
    [first] = wait_until(lambda: _watchdogs(proc.pid), 10, "the watchdog")
    psutil.Process(first).kill()
    [second] = wait_until(lambda: [p for p in _watchdogs(proc.pid) if p != first], 10, "another watchdog")
    assert "exited (code -9): starting another" in workers.log(proc)
    proc.terminate()
    assert proc.wait(15) == 0
    wait_until(lambda: not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE,
               10, "the watchdog to end")


def test_the_watchdog_writes_back_an_entry_lost_while_the_gil_is_held(client, workers, tmp_path):
    """A failover to a replica that missed the entry, while a C call holds the GIL: the
    watchdog writes the entry back from what it last read, so nobody takes the job."""
    runs = tmp_path / "runs"
    job = client.queue_job("testtasks.hold_gil", {"seconds": 3.5, "path": str(runs)}, queue="gil")
    holder = workers.ready(workers.start("--queues", "gil", visibility_timeout_s=2, hostname="host-b"))
    wid = next(w for w in client.broker.registry.ids() if w.startswith("host-b."))
    wait_until(lambda: runs.exists(), 10, "the call to start")
    client.redis.delete(client.broker.keys.worker(wid))
    client.redis.srem(client.broker.keys.workers, wid)
    wait_until(lambda: client.redis.exists(client.broker.keys.worker(wid)), 5, "the entry written back")
    workers.ready(workers.start("--queues", "gil", visibility_timeout_s=2, hostname="host-a"))
    done = client.wait(job, timeout_s=20)
    assert done.status.value == "success" and done.lost == 0 and runs.read_text() == "x", done.history
    assert host_pid(done.worker)[1] == holder.pid


def test_the_watchdog_does_not_keep_a_claim_its_worker_never_got(client, workers):
    client.broker.registry.pause("elsewhere")  # served, but the worker claims none of its jobs itself
    proc = workers.ready(workers.start("--queues", "default,elsewhere", visibility_timeout_s=2))
    wid = next(w for w in client.broker.registry.ids() if host_pid(w)[1] == proc.pid)
    job = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="elsewhere")
    _, _, [claimed] = client.broker.claim(wid, 1, ["elsewhere"])  # a claim whose reply was lost
    assert claimed.id == job
    client.redis.zadd(client.broker.keys.inflight("elsewhere"), {job: (time.time() + 1) * 1000})  # due in 1 s
    # the worker's reaper takes it back once the deadline passes: the watchdog must not extend it
    wait_until(lambda: client.get_job(job).status.value == "interrupt", 10, "the claim to be taken back")
    assert client.get_job(job).lost == 0
