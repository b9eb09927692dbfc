"""Dead workers on any host: found within seconds, only their started jobs charged, none
handed a job after death; zombies and forked children are not workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from helpers import wait_until, worker_env

from runtime.process import host_pid


def _claimed_by(client, ids, wid=None):
    jobs = client.store.get_many(ids)
    return [j for j in jobs if j.status == "started" and (wid is None or j.worker == wid)]


def _worker_of(client, proc):
    return wait_until(lambda: next((w for w in client.broker.registry.ids() if host_pid(w)[1] == proc.pid), None),
                      15, "the worker to register")


def test_a_worker_killed_on_another_host_is_found_in_seconds_and_only_its_started_jobs_charged(client, workers):
    workers.ready(workers.start("--greenlets", "4", hostname="host-a"))  # its reaper sees host-b die
    long = client.queue_jobs("testtasks.sleep", [{"seconds": 2}] * 2, queue="b")
    b = workers.ready(workers.start("--greenlets", "2", "--prefetch", "3", "--queues", "b", hostname="host-b"))
    wid = _worker_of(client, b)
    assert wid.startswith("host-b.")
    wait_until(lambda: all(client.redis.hget(client.broker.keys.job(j), "began") == "1" for j in long), 10,
               "the long jobs to start on host-b")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 3, queue="b")
    wait_until(lambda: len(_claimed_by(client, behind, wid)) == 3, 10, "host-b to prefetch the jobs behind")
    b.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    b.wait(10)
    wait_until(lambda: not _claimed_by(client, long + behind, wid), 15, "the jobs to be taken back")
    # the tests' settings: worker_ttl_s 1, heartbeat 0.2 s, reaper 0.2 s: found within about 2 s
    assert time.monotonic() - killed < 4, time.monotonic() - killed
    assert wid not in client.broker.registry.ids()  # its entry and its set membership cleaned
    workers.start("--greenlets", "8", "--queues", "b", hostname="host-a")
    jobs = client.wait(long + behind, timeout_s=30)
    assert all(j.status == "success" for j in jobs)
    assert [j.lost for j in jobs] == [1, 1, 0, 0, 0]  # only the jobs that had started are charged
    for j in jobs[2:]:
        assert "worker lost before the job started (prefetched)" in [h.get("note") for h in j.history]


def test_a_job_queued_just_after_an_idle_worker_is_killed_runs_at_once_uncharged(client, workers):
    idle = workers.ready(workers.start("--greenlets", "2", hostname="host-b"))
    wid = _worker_of(client, idle)
    wait_until(lambda: client.redis.zscore(client.broker.keys.idle("default"), wid) is not None, 10, "it to wait idle")
    idle.send_signal(signal.SIGKILL)
    idle.wait(10)
    queued = time.monotonic()
    job = client.queue_job("testtasks.add", {"a": 2, "b": 3})
    workers.ready(workers.start("--greenlets", "2", hostname="host-a"))
    done = client.wait(job, timeout_s=20)
    assert done.status == "success" and done.result == 5 and done.lost == 0, done.history
    assert time.monotonic() - queued < 8


def test_a_job_that_crashes_its_worker_runs_max_lost_times_under_several_processes(client, workers, tmp_path):
    runs = tmp_path / "runs"
    poison = client.queue_job("testtasks.crash_counted", {"path": str(runs)})
    healthy = client.queue_jobs("testtasks.sleep", [{"seconds": 0.05}] * 40)
    workers.start("--processes", "4", "--greenlets", "4")
    job = client.wait(poison, timeout_s=60)
    assert job.status == "failed" and job.reason == "worker-lost" and job.lost == 3
    assert runs.read_text() == "xxx"  # max_lost=3: three runs, each charged
    assert all(j.status == "success" for j in client.wait(healthy, timeout_s=60))


def test_a_killed_worker_not_yet_reaped_by_its_parent_is_dead(client, workers, settings):
    long = client.queue_job("testtasks.sleep", {"seconds": 0.5})
    # the worker's parent is a `sleep` that never reaps it: killed, it stays a zombie
    parent = subprocess.Popen(["sh", "-c", f"'{sys.executable}' -m runtime worker --greenlets 1 & echo $!; exec sleep 60"],
                              env=worker_env(settings), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pid = int(parent.stdout.readline())
        wait_until(lambda: client.redis.hget(client.broker.keys.job(long), "began") == "1", 15, "the job to start")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10, "a zombie")
        workers.start("--greenlets", "1")
        done = client.wait(long, timeout_s=15)
        assert done.status == "success" and done.lost == 1
    finally:
        parent.kill()
        parent.wait(10)


def test_a_forked_child_that_returns_into_the_worker_exits_at_once(client, workers, tmp_path):
    proc = workers.ready(workers.start("--greenlets", "4"))
    child_file = tmp_path / "child"
    job = client.wait(client.queue_job("testtasks.fork_and_return", {"path": str(child_file)}), timeout_s=15)
    assert job.status == "success" and job.result == proc.pid
    child = int(wait_until(lambda: child_file.exists() and child_file.read_text(), 10, "the child's pid"))

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_until(gone, 10, "the child to exit")
    # only the worker itself claims: every job runs in its process
    pids = [j.result for j in client.wait(client.queue_jobs("testtasks.pid", [{}] * 30), timeout_s=20)]
    assert set(pids) == {proc.pid}


def test_the_heartbeat_extends_claims_on_the_redis_clock(client, monkeypatch):
    job = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    _, _, [claimed] = client.broker.claim("host-z.1.abcd", 1, ["default"])
    monkeypatch.setattr(time, "time", lambda: 0.0)  # this host's clock is far off
    client.broker.registry.beat(client.redis, "host-z.1.abcd", {"host": "host-z"}, ["default"],
                                {"default": [claimed.id]})
    monkeypatch.undo()
    seconds, micros = client.redis.time()
    deadline_s = client.redis.zscore(client.broker.keys.inflight("default"), job) / 1000
    assert abs(deadline_s - (seconds + micros / 1e6 + client.settings.visibility_timeout_s)) < 5


def test_a_forked_child_never_runs_the_worker_s_other_jobs(client, workers, tmp_path):
    notes = tmp_path / "notes"
    fork = client.queue_job("testtasks.fork_then_sleep", {"path": str(notes)})
    others = client.queue_jobs("testtasks.note", [{"path": str(notes), "tag": f"S{i}"} for i in range(4)])
    proc = workers.ready(workers.start("--greenlets", "5"))
    assert all(j.status.value == "success" for j in client.wait([fork, *others], timeout_s=20))
    child = client.get_job(fork).result
    wait_until(lambda: f"child {child}" in notes.read_text(), 10, "the child's note")
    lines = notes.read_text().splitlines()
    assert not [line for line in lines if line.startswith(f"{child} ")], lines  # the child ran no other job
    assert {line.split()[0] for line in lines if not line.startswith("child")} == {str(proc.pid)}
