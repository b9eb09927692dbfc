"""Numbers that agree: one definition each of wait, run, the task's wall time and CPU,
the same on every screen; counts that count what they say."""

from __future__ import annotations

from helpers import cli, wait_until


def test_runtime_job_shows_one_wait_and_a_task_time_within_its_run(settings, client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.sleep", {"seconds": 0.05}), timeout_s=10)
    t = job.report["timing"]
    assert t["wait_s"] == round(job.wait_s, 6)  # the report's wait is the document's
    assert 0.05 <= t["wall_s"] <= job.run_s and t["cpu_s"] <= t["wall_s"]
    shown = cli(settings, "job", job.id).stdout
    assert shown.count("wait ") == 1 and "the task 5" in shown and "of its run" in shown, shown


def test_runtime_workers_counts_running_jobs_apart_from_prefetched_ones(settings, client, worker):
    running = client.queue_job("testtasks.sleep", {"seconds": 2})
    w = worker.start(greenlets=1, prefetch=3)
    wait_until(lambda: client.get_job(running).status == "started", 10, "the first job to start")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    wait_until(lambda: all(j.status == "started" for j in client.store.get_many(behind)), 10, "prefetch")
    w.heartbeat.beat(w.broker.redis)  # the registry entry as of now (it is written every heartbeat)
    shown = cli(settings, "workers").stdout
    assert "running 1/1 (+3 prefetched)" in shown, shown
    assert running in shown and not any(b in shown for b in behind)
