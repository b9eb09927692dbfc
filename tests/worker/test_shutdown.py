"""Stopping: graceful shutdown and a second stop in-process; then what only a process
shows: signals, SIGKILL recovery, poison jobs that crash their worker, gevent's settings."""

from __future__ import annotations

import signal

import pytest
from helpers import cli, wait_until

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def _running(client, ids):
    return [j for j in client.store.get_many(ids, history=False) if j.status == "started"]


def _began(client, ids):
    """Those of ``ids`` whose attempt began running: their start record is in Redis
    (runtime.worker.starts), which is what the reaper charges a lost worker's job by."""
    docs = [client.redis.hmget(client.broker.keys.job(i), "began", "attempt") for i in ids]
    return [i for i, (began, attempt) in zip(ids, docs) if began is not None and began == attempt]


def test_sigterm_lets_running_jobs_finish_and_claims_nothing_more(client, workers, greenlets=25):
    running = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * greenlets)
    proc = workers.start("--greenlets", str(greenlets), "--prefetch", "0")
    wait_until(lambda: len(_running(client, running)) == greenlets, 10, "jobs to start")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    [wid] = client.broker.registry.ids()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert all(j.status == "success" and j.attempt == 1 for j in client.store.get_many(running))
    assert all(j.status == "queued" for j in client.store.get_many(behind))
    # deregistered: its entry, its lists and its name in the registry are gone
    assert client.broker.registry.ids() == set() and client.broker.registry.entries() == []
    assert not client.redis.exists(client.broker.keys.worker(wid), client.broker.keys.running(wid, "default"))


def test_second_signal_interrupts_and_requeues_at_once(client, workers, greenlets=25):
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 60}] * greenlets)
    proc = workers.ready(workers.start("--greenlets", str(greenlets)))  # a slow machine: ~1 s to start
    wait_until(lambda: len(_running(client, ids)) == greenlets, 10, "jobs to start")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in workers.log(proc), 5, "first signal handled")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    for job in client.store.get_many(ids):
        assert job.status == "interrupt" and job.retries == 0
        assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "interrupt"]
    assert client.reader.queues()["queues"]["default"]["ready"] == greenlets  # requeued at once


@pytest.mark.parametrize("greenlets", [1, 25])
def test_a_stop_lets_running_jobs_finish_and_claims_nothing_more(client, worker, greenlets):
    running = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * greenlets)
    w = worker.start(greenlets=greenlets, prefetch=0)
    wait_until(lambda: len(_running(client, running)) == greenlets, 10, "jobs to start")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    assert worker.stop(w) == 0
    assert all(j.status == "success" and j.attempt == 1 for j in client.store.get_many(running))
    assert all(j.status == "queued" for j in client.store.get_many(behind))
    assert w.id not in client.broker.registry.ids()


def test_a_second_stop_interrupts_and_requeues_at_once(client, worker):
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 60}] * 3)
    w = worker.start(greenlets=3)
    wait_until(lambda: len(_running(client, ids)) == 3, 10, "jobs to start")
    w.stop()
    assert worker.stop(w) == 0  # the second
    for job in client.store.get_many(ids):
        assert job.status == "interrupt" and job.retries == 0
        assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "interrupt"]
    assert client.reader.queues()["queues"]["default"]["ready"] == 3  # requeued at once


def test_grace_period_expiry_interrupts_and_another_worker_finishes(client, worker):
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 1.0}] * 2)
    w = worker.start(greenlets=2, grace_s=0.3)
    wait_until(lambda: len(_running(client, ids)) == 2, 10, "jobs to start")
    assert worker.stop(w) == 0
    assert all(j.status == "interrupt" for j in client.store.get_many(ids))
    worker.start(greenlets=2)
    jobs = client.wait(ids, timeout_s=15)
    assert all(j.status == "success" and j.attempt == 2 and j.retries == 0 for j in jobs)


def test_a_scale_down_drain_lets_running_jobs_finish_past_the_grace(client, worker):
    """A supervisor's drain (SIGUSR1: ``patient``) never cuts a job at the grace period."""
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 1.0}] * 2)
    w = worker.start(greenlets=2, grace_s=0.3)
    wait_until(lambda: len(_running(client, ids)) == 2, 10, "jobs to start")
    w.patient = True
    assert worker.stop(w) == 0
    jobs = client.store.get_many(ids)
    assert all(j.status == "success" and j.attempt == 1 for j in jobs), [(j.status, j.attempt) for j in jobs]


def test_sigkill_mid_jobs_loses_nothing_and_history_shows_the_rerun(client, workers):
    # 3 long jobs fill 3 of 5 slots; 2 slots free; more jobs queued behind with a delay
    long = client.queue_jobs("testtasks.sleep", [{"seconds": 0.6}] * 3)
    proc = workers.start("--greenlets", "5")
    wait_until(lambda: len(_began(client, long)) == 3, 10, "long jobs to start running")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 4, delay=0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    workers.start("--greenlets", "5")
    jobs = client.wait(long + behind, timeout_s=20)
    assert all(j.status == "success" for j in jobs)
    for j in jobs[:3]:
        assert j.attempt == 2 and j.lost == 1
        # the killed attempt ran: its start record gives the reaper its started entry
        statuses = [h["status"] for h in j.history]
        assert statuses == ["queued", "claimed", "started", "queued", "claimed", "started", "success"], statuses
        claimed, started, lost = j.history[1:4]
        assert started["attempt"] == 1 and started["worker"] == claimed["worker"]
        assert claimed["at"] <= started["at"] <= lost["at"] and "worker lost" in lost["note"]
    assert all(j.attempt == 1 for j in jobs[3:])


def test_job_that_kills_its_worker_ends_failed_worker_lost_after_3(client, workers):
    poison = client.queue_job("tasks_example.work.crash", priority=10)
    healthy = client.queue_jobs("testtasks.add", [{"a": 2, "b": 2}] * 5)
    deaths = 0
    while client.get_job(poison).status != "failed":
        proc = workers.start("--greenlets", "1")
        wait_until(lambda p=proc: p.poll() is not None or client.get_job(poison).status == "failed",
                          20, "the worker to die or the job to fail")
        if proc.poll() is not None:
            assert proc.returncode == 13
            deaths += 1
        assert deaths <= 3
    job = client.get_job(poison)
    assert deaths == 3 and job.lost == 3 and job.reason == "worker-lost" and job.exc_type == "WorkerLost"
    assert [h["status"] for h in job.history].count("started") == 3  # each charged attempt ran
    workers.start("--greenlets", "1")
    assert all(j.status == "success" and j.result == 4 for j in client.wait(healthy, timeout_s=20))
    # each death is an event naming the job it ran and its task, and what became of it
    lost = [e for e in client.reader.events(50) if e["event"] == "lost"]
    assert len(lost) == 3 and all({"id": poison, "path": "tasks_example.work.crash"} in e["running"] for e in lost)
    assert lost[0]["failed"] == 1 and all(e["failed"] == 0 and e["requeued"] >= 1 for e in lost[1:])  # newest first
    text = cli(client.settings, "events").stdout
    assert "lost (worker-lost)" in text and f"running jobs: {poison} (tasks_example.work.crash); requeued 0, failed 1" in text


def test_prefetched_jobs_are_returned_unrun_at_stop_and_run_by_the_next_worker(client, worker):
    running = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 4)
    w = worker.start(greenlets=4, prefetch=2)
    wait_until(lambda: len(_running(client, running)) == 4, 10, "jobs to start")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 2)
    wait_until(lambda: len(_running(client, behind)) == 2, 10, "the worker to prefetch the jobs behind")
    assert worker.stop(w) == 0
    assert all(j.status == "success" for j in client.store.get_many(running))
    for job in client.store.get_many(behind):  # claimed ahead, never run: back in the queue
        assert job.status == "interrupt" and job.result is None
        assert job.history[-1]["note"] == "prefetched; the worker stopped before running it"
    worker.start(greenlets=4)
    assert all(j.status == "success" and j.result == 3 for j in client.wait(behind, timeout_s=10))


def test_jobs_claimed_beside_a_job_that_kills_workers_do_not_fail_with_it(client, workers):
    # prefetch and greenlets put other jobs in the same worker as the poison job; after the
    # first death they are each claimed and run alone, so only the poison is charged again
    before = client.queue_jobs("testtasks.sleep", [{"seconds": 0.2}] * 3)
    poison = client.queue_job("tasks_example.work.crash")
    after = client.queue_jobs("testtasks.sleep", [{"seconds": 0.2}] * 3)
    deaths = 0
    while client.get_job(poison).status != "failed":
        proc = workers.start("--greenlets", "4")
        wait_until(lambda p=proc: p.poll() is not None or client.get_job(poison).status == "failed",
                   30, "the worker to die or the poison to fail")
        deaths += proc.poll() is not None
        assert deaths <= 3
    job = client.get_job(poison)
    assert job.lost == 3 and job.reason == "worker-lost"
    workers.start("--greenlets", "4")
    for j in client.wait(before + after, timeout_s=30):
        assert j.status == "success" and j.lost <= 1, (j.id, j.status, j.lost)


def test_gevent_records_spawn_trees_in_a_worker_only_when_asked(client, workers, monkeypatch):
    """`runtime worker` turns gevent's track_greenlet_tree off (a cost on every job);
    GEVENT_TRACK_GREENLET_TREE=1 turns it back on."""
    workers.start()
    assert client.wait(client.queue_job("testtasks.spawn_tree"), timeout_s=10).result is False
    workers.stop_all()
    monkeypatch.setenv("GEVENT_TRACK_GREENLET_TREE", "1")
    workers.start()
    assert client.wait(client.queue_job("testtasks.spawn_tree"), timeout_s=10).result is True


UNPATCHED = """
import sys
from runtime.settings import load_settings
from runtime.worker.worker import Worker
w = Worker.from_settings(load_settings({"redis_url": sys.argv[1], "key_prefix": sys.argv[2],
                                        "task_modules": "testtasks"}, env={}))
ids = w.client.queue_jobs("testtasks.sleep", [{"seconds": 0.1}] * 3)
assert w.run(burst=True) == 0
print(*[j.status.value for j in w.client.store.get_many(ids)])
"""


def test_a_worker_in_a_process_gevent_did_not_patch_runs_its_jobs_one_batch_at_a_time(settings, cli_env):
    """Without monkey-patching, Redis calls block the hub: the worker says so and still
    runs every job (before, a burst waited for good with the jobs claimed)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", UNPATCHED, settings.redis_url, settings.key_prefix],
                         env=cli_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["success"] * 3 and "has not monkey-patched this process" in out.stderr
